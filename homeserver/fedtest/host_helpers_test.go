package fedtest

import (
	"testing"

	"github.com/ferry-matrix/ferry/store"
)

// registerUsers registers local users of a node: servers refuse invites
// for users that are not registered.
func registerUsers(t *testing.T, n *node, userIDs ...string) {
	t.Helper()
	for _, u := range userIDs {
		if err := n.DB.PutUser(testContext(t), store.User{ID: u}); err != nil {
			t.Fatal(err)
		}
	}
}
