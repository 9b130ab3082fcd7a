package dns

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// cacheSize bounds the entries of the cache of forwarded answers. It is
	// systemd-resolved's bound; an entry holds at most maxCachedMsg bytes
	// of answer, so the cache stays under 16 MiB even when every answer is
	// large, and a few MiB for the usual few hundred bytes.
	cacheSize = 4096
	// maxCachedMsg is the largest answer kept; larger ones (long TXT sets,
	// big round-robin pools) are forwarded every time rather than let a
	// handful of them hold the memory of the whole cache.
	maxCachedMsg = dns.DefaultMsgSize
	// maxPositiveTTL and maxNegativeTTL bound how long an answer is kept,
	// whatever its records say: CoreDNS's cache defaults, so that a change
	// upstream is seen within an hour, and a name that did not exist
	// within half an hour (RFC 2308 §5 advises one to three hours at most).
	maxPositiveTTL = 3600
	maxNegativeTTL = 1800
)

// cacheKey identifies the answers that can serve a question. The upstream
// set is part of it because sandboxes with different upstream servers may
// rightly get different answers for the same name; DO and CD are because
// they change what a validating upstream sends back.
type cacheKey struct {
	name      string // lower-cased
	qtype     uint16
	qclass    uint16
	do, cd    bool
	upstreams string
}

func keyOf(q *dns.Msg, asker Asker) cacheKey {
	question := q.Question[0]
	k := cacheKey{name: strings.ToLower(question.Name), qtype: question.Qtype, qclass: question.Qclass,
		cd: q.CheckingDisabled, upstreams: asker.upstreamKey}
	if opt := q.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

// entry is an upstream answer, normalised to serve any asker of its key:
// no OPT record (that is hop-by-hop, each asker gets its own), and, when
// it has a lifetime, every record's TTL replaced by it, counted down as it
// ages, so no asker keeps a record longer than the cache would. Entries
// are immutable once made, so askers share them without locks.
type entry struct {
	msg    *dns.Msg
	stored time.Time
	ttl    uint32 // seconds; 0: served as upstream gave it, never cached
	keep   bool   // whether the cache may hold it
}

func newEntry(resp *dns.Msg, now time.Time) *entry {
	msg := resp.Copy()
	msg.Extra = slices.DeleteFunc(msg.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
	ttl := cacheTTL(msg)
	return &entry{msg: msg, stored: now, ttl: ttl, keep: ttl > 0 && msg.Len() <= maxCachedMsg}
}

// cacheTTL is how long an answer may be kept, 0 for not at all: the
// smallest TTL of its records for a positive answer (so that no record is
// ever served past its own TTL), min(SOA TTL, SOA MINIMUM) for NXDOMAIN or
// NODATA with an SOA in the authority section (RFC 2308 §5), and nothing
// else: a negative answer without an SOA, SERVFAIL, REFUSED, anything
// truncated.
func cacheTTL(m *dns.Msg) uint32 {
	if m.Truncated || len(m.Question) != 1 {
		return 0
	}
	negative := m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0)
	if negative {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return min(soa.Hdr.Ttl, soa.Minttl, maxNegativeTTL)
			}
		}
		return 0
	}
	if m.Rcode != dns.RcodeSuccess {
		return 0
	}
	ttl := uint32(maxPositiveTTL)
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return ttl
}

func (e *entry) expired(now time.Time) bool {
	return !now.Before(e.stored.Add(time.Duration(e.ttl) * time.Second))
}

// answer is the entry made into the reply to q: q's ID and question as
// the asker spelled it, TTLs as they stand at now, and an OPT record when
// the asker sent one (RFC 6891 forbids it otherwise).
func (e *entry) answer(q *dns.Msg, now time.Time) *dns.Msg {
	m := e.msg.Copy()
	m.Id = q.Id
	m.Question = slices.Clone(q.Question)
	m.RecursionDesired = q.RecursionDesired
	if e.ttl > 0 {
		age := uint32(now.Sub(e.stored) / time.Second)
		for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range section {
				rr.Header().Ttl = e.ttl - min(age, e.ttl)
			}
		}
	}
	if opt := q.IsEdns0(); opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, opt.Do())
	} else if m.Rcode > 0xF {
		// An extended rcode that only an OPT record can carry.
		m.Rcode = dns.RcodeServerFailure
	}
	return m
}

// cache holds forwarded answers, least recently used first out. One mutex
// is enough: it guards a map access and a list move, far shorter than
// packing the answer that follows.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cached, most recently used first
	byKey map[cacheKey]*list.Element
}

type cached struct {
	key cacheKey
	e   *entry
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), byKey: map[cacheKey]*list.Element{}}
}

// get returns the live entry of key, dropping it when it has expired.
func (c *cache) get(key cacheKey, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cached).e
	if e.expired(now) {
		c.order.Remove(el)
		delete(c.byKey, key)
		return nil
	}
	c.order.MoveToFront(el)
	return e
}

// put keeps e under key if it may be cached at all.
func (c *cache) put(key cacheKey, e *entry) {
	if !e.keep {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		el.Value.(*cached).e = e
		c.order.MoveToFront(el)
		return
	}
	c.byKey[key] = c.order.PushFront(&cached{key: key, e: e})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cached).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
