package syncgroup

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Exceptions are, per writer, sorted sequence numbers that a version
// vector's entry covers but whose rows the replica does not hold: rows it
// refused over the group's budget, and rows a peer's vector carried it
// past while the peer named them so. They travel with the vector (hello,
// batch), and a peer sends such a row again, every round, while it holds
// it: once the row fits (the budget raised, the writer's other rows
// deleted, a tombstone that frees room arrived), it is taken. So a refusal
// is never final, yet a writer's later rows are not sent again and again
// for it, as they would be were the vector held below it.
type Exceptions map[peer.ID][]uint64

// Has reports whether seq of writer w is an exception.
func (x Exceptions) Has(w peer.ID, seq uint64) bool {
	_, ok := slices.BinarySearch(x[w], seq)
	return ok
}

// Bounds of the exceptions a replica keeps: past them a refused row is
// counted as known and not asked again here (only a writer past its
// budget many times over, or a budget lowered far under one, gets there).
const (
	MaxExceptions    = 1024 // a writer
	MaxExceptionsAll = 8192 // a replica
)

// exception is one exception of a replica: the sequence number and the
// generation in which it was last refused or learnt (see Asked).
type exception struct {
	seq, gen uint64
}

// Asked is what a replica tells a peer it has at the start of a round:
// its vector, its exceptions, and their generation then. The peer's
// answer sends every row it holds that they do not cover.
type Asked struct {
	VV  VersionVector
	Exc Exceptions
	Gen uint64
}

// Ask returns what to tell a peer at the start of a round; exceptions
// made from now on are of a later generation.
func (r *Rows) Ask() Asked {
	a := Asked{VV: r.VV(), Exc: r.Exceptions(), Gen: r.excGen}
	r.excGen++
	return a
}

// Exceptions returns the replica's exceptions, as the wire carries them.
func (r *Rows) Exceptions() Exceptions {
	if len(r.exc) == 0 {
		return nil
	}
	out := make(Exceptions, len(r.exc))
	for w, es := range r.exc {
		seqs := make([]uint64, len(es))
		for i, e := range es {
			seqs[i] = e.seq
		}
		out[w] = seqs
	}
	return out
}

// Excepted reports whether seq of writer w is an exception here.
func (r *Rows) Excepted(w peer.ID, seq uint64) bool {
	_, ok := r.excAt(w, seq)
	return ok
}

func (r *Rows) excAt(w peer.ID, seq uint64) (int, bool) {
	return slices.BinarySearchFunc(r.exc[w], seq, func(e exception, s uint64) int {
		switch {
		case e.seq < s:
			return -1
		case e.seq > s:
			return 1
		}
		return 0
	})
}

// except makes seq of writer w an exception of the current generation,
// within the bounds: a writer's lowest goes to make room for a higher
// one, and past the replica's bound it is not kept.
func (r *Rows) except(w peer.ID, seq uint64) {
	i, ok := r.excAt(w, seq)
	if ok {
		r.exc[w][i].gen = r.excGen
		return
	}
	if r.excN >= MaxExceptionsAll {
		return
	}
	if r.exc == nil {
		r.exc = map[peer.ID][]exception{}
	}
	r.exc[w] = slices.Insert(r.exc[w], i, exception{seq: seq, gen: r.excGen})
	r.excN++
	if len(r.exc[w]) > MaxExceptions {
		r.exc[w] = slices.Delete(r.exc[w], 0, 1)
		r.excN--
	}
}

// unexcept forgets seq of writer w as an exception: its row is held.
func (r *Rows) unexcept(w peer.ID, seq uint64) {
	if i, ok := r.excAt(w, seq); ok {
		r.exc[w] = slices.Delete(r.exc[w], i, i+1)
		r.excN--
		if len(r.exc[w]) == 0 {
			delete(r.exc, w)
		}
	}
}

// answered settles writer w's exceptions after a vouched peer's answer
// to asked: the peer's claim remote, with its own exceptions x. Those of
// its exceptions that taking its claim carries this replica past become
// this replica's; and one of this replica's that it had when it asked,
// that the peer counts and does not except, and that no refusal since
// renewed, is gone: the peer held it and sent it (taken), or holds a
// newer version of its key (sent, if this replica lacked it).
func (r *Rows) answered(w peer.ID, from, to uint64, remote uint64, x Exceptions, asked *Asked) {
	theirs := slices.Sorted(slices.Values(x[w])) // as the peer sent them
	for _, seq := range theirs {
		if seq > from && seq <= to {
			r.except(w, seq)
		}
	}
	if asked == nil {
		return
	}
	for _, e := range slices.Clone(r.exc[w]) {
		if _, excepted := slices.BinarySearch(theirs, e.seq); e.gen <= asked.Gen && e.seq <= remote && !excepted {
			r.unexcept(w, e.seq)
		}
	}
}

// restoreExceptions takes back the exceptions kept with the replica.
func (r *Rows) restoreExceptions(x Exceptions) {
	for w, seqs := range x {
		for _, s := range seqs {
			r.except(w, s)
		}
	}
}
