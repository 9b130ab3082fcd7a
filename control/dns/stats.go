package dns

// outcome is how a query was answered; every query has exactly one.
type outcome int

const (
	local     outcome = iota // from the view: a name, an alias, a PTR of the asker's networks
	cacheHit                 // from the cache of forwarded answers
	forwarded                // by an upstream server (or by an identical query's trip there)
	failed                   // SERVFAIL: no upstream server answered within the budget
	dropped                  // SERVFAIL at once: past an in-flight limit
	refused                  // an unknown asker, or one with nowhere to forward to
	malformed                // FORMERR: not one question, or not a query
	numOutcomes
	// pending is no outcome yet: AnswerNow's query goes upstream. Never counted.
	pending outcome = -1
)

// Stats are the resolver's counters since it started, for metrics.
type Stats struct {
	// Queries by outcome; they add up to all queries answered. Forwarded
	// counts whatever upstream said, its own SERVFAIL included; ServFail
	// counts the SERVFAILs of our making (no upstream answered in time),
	// Dropped those answered at once past an in-flight limit.
	Local, CacheHit, Forwarded, ServFail, Dropped, Refused, Malformed uint64
	// NXDomain counts the answers that said NXDOMAIN: all came from
	// upstream, through the cache or not, as a name of the view never does.
	NXDomain uint64
	// CacheMisses counts the forwardable queries the cache could not
	// answer; Coalesced, those of them answered by an identical query
	// already on its way upstream.
	CacheMisses, Coalesced uint64
	// CacheEntries is how many answers the cache holds now, expired ones
	// not yet dropped included.
	CacheEntries int
}

// Stats returns a snapshot of the counters. Each is read atomically, not
// all of them at one instant: a query answered meanwhile may show in some
// and not yet in others.
func (r *Resolver) Stats() Stats {
	return Stats{
		Local:        r.counts[local].Load(),
		CacheHit:     r.counts[cacheHit].Load(),
		Forwarded:    r.counts[forwarded].Load(),
		ServFail:     r.counts[failed].Load(),
		Dropped:      r.counts[dropped].Load(),
		Refused:      r.counts[refused].Load(),
		Malformed:    r.counts[malformed].Load(),
		NXDomain:     r.nxdomain.Load(),
		CacheMisses:  r.misses.Load(),
		Coalesced:    r.shared.Load(),
		CacheEntries: r.cache.len(),
	}
}
