package store

import (
	"fmt"
	"maps"
	"testing"
)

// TestNIDCache: published numbers are found; the cache starts again
// empty rather than grow past its bound, and a set larger than the bound
// is not kept at all.
func TestNIDCache(t *testing.T) {
	c := boundedCache[string, int64]{limit: nidCacheSize}
	publish := func(m map[string]int64) { c.publish(len(m), maps.All(m)) }
	if _, ok := c.get("$a"); ok {
		t.Fatal("an empty cache found an event")
	}
	publish(map[string]int64{"$a": 1, "$b": 2})
	if nid, ok := c.get("$b"); !ok || nid != 2 {
		t.Fatalf("get $b = %d, %v", nid, ok)
	}
	many := make(map[string]int64, nidCacheSize)
	for i := range nidCacheSize - 1 {
		many[fmt.Sprintf("$m%d", i)] = int64(i + 10)
	}
	publish(many)
	if _, ok := c.get("$a"); ok {
		t.Fatal("the cache grew past its bound instead of starting again")
	}
	if nid, ok := c.get("$m5"); !ok || nid != 15 {
		t.Fatalf("get $m5 = %d, %v", nid, ok)
	}
	many["$extra1"], many["$extra2"] = 1, 2
	publish(many)
	if len(c.m) != 0 {
		t.Fatalf("a set over the bound left %d entries", len(c.m))
	}
}
