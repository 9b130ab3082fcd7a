// Package publications publishes sandboxes' ports: it chooses and holds
// their host ports (one allocator for every publication, built from the
// store when first needed), writes and removes their map entries,
// balanced ports' backend tables included, and changes their source
// lists.
//
// It works inside the engine's store transactions and under the engine's
// lock, registering on the change's undo list how to take its map writes
// back; it never commits a transaction and has no lock of its own. Which
// sandbox a request may change (a frontend's own) is the engine's to say.
package publications
