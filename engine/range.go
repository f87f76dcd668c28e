package engine

import (
	"bytes"
	"cmp"
	"slices"
)

// SortOrder is etcd's RangeRequest.SortOrder.
type SortOrder int

const (
	SortNone SortOrder = iota
	SortAscend
	SortDescend
)

// SortTarget is etcd's RangeRequest.SortTarget.
type SortTarget int

const (
	SortByKey SortTarget = iota
	SortByVersion
	SortByCreate
	SortByMod
	SortByValue
)

// order is the sort a read really needs: a target other than the key with
// no order sorts ascending (as etcd does), and ascending by key is the
// index's own order.
func (o *RangeOptions) order() SortOrder {
	switch {
	case o.SortTarget != SortByKey && o.SortOrder == SortNone:
		return SortAscend
	case o.SortTarget == SortByKey && o.SortOrder == SortAscend:
		return SortNone
	}
	return o.SortOrder
}

func (o *RangeOptions) filtered() bool {
	return o.MinModRev != 0 || o.MaxModRev != 0 || o.MinCreateRev != 0 || o.MaxCreateRev != 0
}

// fetchLimit is how many keys a read takes from the index: every one when
// a sort or a filter decides which come first, else one past the limit so
// that More can be told.
func (o *RangeOptions) fetchLimit() int {
	if o.order() != SortNone || o.filtered() || o.Limit <= 0 {
		return 0
	}
	return o.Limit + 1
}

// finish prunes, sorts and cuts what a read fetched, in etcd's order:
// filters, sort, limit (setting More), then keys-only. Count is left alone:
// it counts the range, whatever the limit and the filters.
func (o *RangeOptions) finish(res *RangeResult) {
	if o.filtered() {
		res.KVs = slices.DeleteFunc(res.KVs, func(kv KeyValue) bool {
			return (o.MinModRev != 0 && kv.ModRevision < o.MinModRev) ||
				(o.MaxModRev != 0 && kv.ModRevision > o.MaxModRev) ||
				(o.MinCreateRev != 0 && kv.CreateRevision < o.MinCreateRev) ||
				(o.MaxCreateRev != 0 && kv.CreateRevision > o.MaxCreateRev)
		})
	}
	if order := o.order(); order != SortNone {
		// Stable over the key order the index returns: ties stay by key.
		by := o.compare()
		if order == SortDescend {
			asc := by
			by = func(a, b KeyValue) int { return asc(b, a) }
		}
		slices.SortStableFunc(res.KVs, by)
	}
	if o.Limit > 0 && len(res.KVs) > o.Limit {
		res.KVs, res.More = res.KVs[:o.Limit], true
	}
	if o.KeysOnly {
		for i := range res.KVs {
			res.KVs[i].Value = nil
		}
	}
}

func (o *RangeOptions) compare() func(a, b KeyValue) int {
	switch o.SortTarget {
	case SortByVersion:
		return func(a, b KeyValue) int { return cmp.Compare(a.Version, b.Version) }
	case SortByCreate:
		return func(a, b KeyValue) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) }
	case SortByMod:
		return func(a, b KeyValue) int { return cmp.Compare(a.ModRevision, b.ModRevision) }
	case SortByValue:
		return func(a, b KeyValue) int { return bytes.Compare(a.Value, b.Value) }
	}
	return func(a, b KeyValue) int { return bytes.Compare(a.Key, b.Key) }
}
