package rooms_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// v10 3 / v12 4: m.federate false keeps other servers out.
func TestAuthFederate_3(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{CreateContent: map[string]any{"m.federate": false}})
		wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "join")), "federate", "the room is not federated")
		wantAllowed(t, r, r.Build(roomstest.Member(ann, ann, "join")))
		open := newRoom(t, v, roomstest.Options{CreateContent: map[string]any{"m.federate": true}})
		wantAllowed(t, open, open.Build(roomstest.Member(bob, bob, "join")))
	})
}

// v10 4.1 / v12 5.1: a member event has a state key and a membership.
func TestAuthMember_4_1_StateKeyAndMembership(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		noKey := roomstest.Member(bob, bob, "join")
		noKey.StateKey = nil
		wantRejected(t, r, r.Build(noKey), "membership", "no state_key")
		noMembership := roomstest.Member(bob, bob, "join")
		noMembership.Content = map[string]any{"displayname": "Bob"}
		wantRejected(t, r, r.Build(noMembership), "membership", "content has no membership")
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
	})
}

// v10 4.2 / v12 5.2: join_authorised_via_users_server needs its server's
// signature.
func TestAuthMember_4_2_AuthorisingServerSignature(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		wantAllowed(t, r, r.Build(roomstest.RestrictedJoin(bob, alice)))
		unsigned := roomstest.RestrictedJoin(bob, alice)
		unsigned.ExtraSigners = nil
		wantRejected(t, r, r.Build(unsigned), "membership", "not signed by a.test")
		notUser := roomstest.Member(bob, bob, "join")
		notUser.Content["join_authorised_via_users_server"] = 42
		wantRejected(t, r, r.Build(notUser), "membership", "not a valid user ID")
	})
}

// v10 4.3.1 / v12 5.3.1: the creator's join directly after the create
// event needs nothing else; anyone else's join with the create event as
// its only prev event follows the normal rules.
func TestAuthJoin_4_3_1_CreatorAfterCreate(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{Minimal: true})
		create := r.Create()
		afterCreate := r.Fork(create.EventID())
		wantAllowed(t, afterCreate, afterCreate.Build(roomstest.Member(alice, alice, "join")))
		wantRejected(t, afterCreate, afterCreate.Build(roomstest.Member(bob, bob, "join")), "membership", "the room has no join rule")

		// In a public room a join whose only prev event is the create
		// event passes by the public rule; in an invite-only room only
		// the creator's does.
		pub := newRoom(t, v, roomstest.Options{})
		onlyCreate := roomstest.Member(bob, bob, "join")
		onlyCreate.PrevEvents = []string{pub.Create().EventID()}
		wantAllowed(t, pub, pub.Build(onlyCreate))
		inv := newRoom(t, v, roomstest.Options{JoinRule: "invite"})
		onlyCreate.PrevEvents = []string{inv.Create().EventID()}
		wantRejected(t, inv, inv.Build(onlyCreate), "membership", "not invited")
		creatorAgain := roomstest.Member(alice, alice, "join")
		creatorAgain.PrevEvents = []string{inv.Create().EventID()}
		wantAllowed(t, inv, inv.Build(creatorAgain))
	})
}

// v10 4.3.1: the creator is content.creator, not the sender; v12 5.3.1:
// the sender.
func TestAuthJoin_4_3_1_WhoIsCreator(t *testing.T) {
	v := version(t, "10")
	r := newRoom(t, v, roomstest.Options{Minimal: true})
	create := r.Build(createSpec(v, alice, map[string]any{"creator": bob}))
	r.Add(create)
	after := r.Fork(create.EventID())
	byCreator := roomstest.Member(bob, bob, "join")
	byCreator.PrevEvents = []string{create.EventID()}
	bySender := roomstest.Member(alice, alice, "join")
	bySender.PrevEvents = []string{create.EventID()}
	state := map[rooms.StateTuple]*rooms.Event{rooms.CreateTuple: create}
	if err := rooms.CheckAuth(after.Build(byCreator), state); err != nil {
		t.Fatalf("v10 join by content.creator: %v", err)
	}
	ev := after.Build(bySender)
	wantAuthError(t, ev, rooms.CheckAuth(ev, state), "membership", "no join rule")

	r12 := newRoom(t, version(t, "12"), roomstest.Options{Minimal: true})
	join := r12.StateEvent("m.room.member", alice)
	if err := rooms.CheckAuth(join, r12.StateAfter(r12.Create().EventID())); err != nil {
		t.Fatalf("v12 join by the create sender: %v", err)
	}
}

// v10 4.3.2 / v12 5.3.2: users join only themselves.
func TestAuthJoin_4_3_2_SenderIsStateKey(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		wantRejected(t, r, r.Build(roomstest.Member(alice, bob, "join")), "membership", "is not the state key")
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
	})
}

// v10 4.3.3 / v12 5.3.3: banned users cannot join.
func TestAuthJoin_4_3_3_Banned(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Ban(alice, bob)
		wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "join")), "membership", "join: sender is banned")
		r.Kick(alice, bob) // unban
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
	})
}

// v10 4.3.4 / v12 5.3.4: invite and knock rooms need an invite.
func TestAuthJoin_4_3_4_InviteOrKnockRule(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		for _, rule := range []string{"invite", "knock"} {
			t.Run(rule, func(t *testing.T) {
				r := newRoom(t, v, roomstest.Options{JoinRule: rule})
				if rule == "knock" {
					r.Knock(bob)
				}
				wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "join")), "membership", "the join rule is "+rule+" and the sender is not invited")
				r.Invite(alice, bob)
				wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
				r.Join(bob)
				wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
			})
		}
	})
}

// v10 4.3.5 / v12 5.3.5: restricted and knock_restricted rooms.
func TestAuthJoin_4_3_5_Restricted(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		for _, rule := range []string{"restricted", "knock_restricted"} {
			t.Run(rule, func(t *testing.T) {
				r := newRoom(t, v, roomstest.Options{JoinRule: rule})
				setLevels(r, func(c map[string]any) { c["invite"] = int64(50) })
				r.Join(alice) // profile change; keeps alice joined
				// 5.1: an invited user joins without an authoriser.
				invited := r.Fork(r.Invite(alice, carol).EventID())
				wantAllowed(t, invited, invited.Build(roomstest.Member(carol, carol, "join")))
				// 5.2: no authoriser.
				wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "join")), "membership", "has no join_authorised_via_users_server")
				// 5.2: an authoriser who is not joined.
				wantRejected(t, r, r.Build(roomstest.RestrictedJoin(bob, dave)), "membership", "authorising user "+dave+" is not joined")
				// 5.2: an authoriser below the invite level.
				r.Invite(alice, carol)
				r.Join(carol)
				wantRejected(t, r, r.Build(roomstest.RestrictedJoin(bob, carol)), "membership", "below the invite level 50")
				// 5.3: an authoriser at the invite level.
				setUser(r, carol, 50)
				wantAllowed(t, r, r.Build(roomstest.RestrictedJoin(bob, carol)))
				wantAllowed(t, r, r.Build(roomstest.RestrictedJoin(bob, alice)))
			})
		}
	})
}

// v10 4.3.6 / v12 5.3.6 and 4.3.7 / 5.3.7: public rooms admit anyone;
// other join rules nobody.
func TestAuthJoin_4_3_6_Public_4_3_7_Otherwise(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{JoinRule: "public"})
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
		private := newRoom(t, v, roomstest.Options{JoinRule: "private"})
		wantRejected(t, private, private.Build(roomstest.Member(bob, bob, "join")), "membership", `join rule "private" does not allow joining`)
	})
}

// v10 4.4.1 / v12 5.4.1: third-party invites.
func TestAuthInvite_4_4_1_ThirdParty(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		idKey := roomstest.IdentityKey()
		setup := func(t *testing.T) *roomstest.Room {
			r := newRoom(t, v, roomstest.Options{})
			r.Join(bob)
			r.SendState(alice, "m.room.third_party_invite", "tok", roomstest.ThirdPartyInviteContent(idKey))
			return r
		}
		signed := func(t *testing.T, mxid, token string) map[string]any {
			return roomstest.ThirdPartySigned(t, mxid, token, idKey)
		}
		t.Run("allowed", func(t *testing.T) {
			r := setup(t)
			ev := r.Build(roomstest.ThirdPartyInvite(alice, carol, signed(t, carol, "tok")))
			wantAllowed(t, r, ev)
			found := false
			for _, ae := range r.AuthEventsOf(ev) {
				if sk, _ := ae.StateKey(); ae.Type() == "m.room.third_party_invite" && sk == "tok" {
					found = true
				}
			}
			if !found {
				t.Error("the invite does not list the m.room.third_party_invite event")
			}
		})
		t.Run("1 target banned", func(t *testing.T) {
			r := setup(t)
			r.Ban(alice, carol)
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, signed(t, carol, "tok"))), "membership", "the target is banned")
		})
		t.Run("2 no signed", func(t *testing.T) {
			r := setup(t)
			s := roomstest.Member(alice, carol, "invite")
			s.Content["third_party_invite"] = map[string]any{"display_name": "c...@example.org"}
			wantRejected(t, r, r.Build(s), "membership", "no signed object")
		})
		t.Run("3 no token", func(t *testing.T) {
			r := setup(t)
			noToken := roomstest.ThirdPartySigned(t, carol, "tok", idKey)
			delete(noToken, "token")
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, noToken)), "membership", "signed lacks mxid or token")
		})
		t.Run("4 mxid is not the target", func(t *testing.T) {
			r := setup(t)
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, signed(t, dave, "tok"))), "membership", "is not the state key")
		})
		t.Run("5 no invite event for the token", func(t *testing.T) {
			r := setup(t)
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, signed(t, carol, "other"))), "membership", "no m.room.third_party_invite event for the token")
		})
		t.Run("6 sender differs", func(t *testing.T) {
			r := setup(t)
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(bob, carol, signed(t, carol, "tok"))), "membership", "sender is not the sender of the m.room.third_party_invite event")
		})
		t.Run("8 signature does not verify", func(t *testing.T) {
			r := setup(t)
			forged := roomstest.Key("evil.test")
			forged.KeyID = "ed25519:0"
			bad := roomstest.ThirdPartySigned(t, carol, "tok", forged)
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, bad)), "membership", "no signature in signed verifies")
			// A valid signature over different content does not verify.
			tampered := signed(t, carol, "tok")
			tampered["extra"] = "added after signing"
			wantRejected(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, tampered)), "membership", "no signature in signed verifies")
		})
		t.Run("7 key in public_keys only", func(t *testing.T) {
			r := newRoom(t, v, roomstest.Options{})
			content := roomstest.ThirdPartyInviteContent(idKey)
			content["public_key"] = rooms.EncodeBase64(roomstest.Key("other.test").PublicKey())
			r.SendState(alice, "m.room.third_party_invite", "tok", content)
			wantAllowed(t, r, r.Build(roomstest.ThirdPartyInvite(alice, carol, signed(t, carol, "tok"))))
		})
	})
}

// v10 4.4.2-4.4.5 / v12 5.4.2-5.4.5: ordinary invites.
func TestAuthInvite_4_4_2_to_5(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		// 4.4.2: the sender must be joined.
		wantRejected(t, r, r.Build(roomstest.Member(carol, dave, "invite")), "membership", "invite: sender is not joined")
		// 4.4.3: not someone joined or banned.
		wantRejected(t, r, r.Build(roomstest.Member(alice, bob, "invite")), "membership", "target's membership is join")
		banned := r.Fork(r.Ban(alice, dave).EventID())
		wantRejected(t, banned, banned.Build(roomstest.Member(alice, dave, "invite")), "membership", "target's membership is ban")
		// 4.4.4: at the invite level (default 0).
		wantAllowed(t, r, r.Build(roomstest.Member(bob, carol, "invite")))
		// 4.4.5: below it.
		setLevels(r, func(c map[string]any) { c["invite"] = int64(50) })
		wantRejected(t, r, r.Build(roomstest.Member(bob, carol, "invite")), "membership", "below the invite level 50")
		wantAllowed(t, r, r.Build(roomstest.Member(alice, carol, "invite")))
	})
}

// v10 4.5.1 / v12 5.5.1: leaving oneself.
func TestAuthLeave_4_5_1_Self(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{JoinRule: "knock"})
		r.Invite(alice, bob)
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "leave"))) // reject the invite
		r.Join(bob)
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "leave")))
		r.Knock(carol)
		wantAllowed(t, r, r.Build(roomstest.Member(carol, carol, "leave"))) // retract the knock
		wantRejected(t, r, r.Build(roomstest.Member(dave, dave, "leave")), "membership", "membership is leave, not invite, join or knock")
		r.Ban(alice, bob)
		wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "leave")), "membership", "membership is ban")
	})
}

// v10 4.5.2-4.5.5 / v12 5.5.2-5.5.5: kicks and unbans.
func TestAuthLeave_4_5_2_to_5_KickAndUnban(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		r.Join(carol)
		// 4.5.2: the kicker must be joined.
		wantRejected(t, r, r.Build(roomstest.Member(dave, bob, "leave")), "membership", "kick: sender is not joined")
		// 4.5.4: at the kick level and above the target.
		wantAllowed(t, r, r.Build(roomstest.Member(alice, bob, "leave")))
		// 4.5.5: below the kick level, or not above the target.
		wantRejected(t, r, r.Build(roomstest.Member(bob, carol, "leave")), "membership", "below the kick level 50")
		setLevels(r, func(c map[string]any) {
			users := subMap(c, "users")
			users[bob], users[carol] = int64(50), int64(50)
			c["ban"] = int64(75)
		})
		wantRejected(t, r, r.Build(roomstest.Member(bob, carol, "leave")), "membership", "target's power level 50 is not below the sender's 50")
		// 4.5.3: unbanning needs the ban level.
		r.Ban(alice, dave)
		wantRejected(t, r, r.Build(roomstest.Member(bob, dave, "leave")), "membership", "unban: sender's power level 50 is below the ban level 75")
		wantAllowed(t, r, r.Build(roomstest.Member(alice, dave, "leave")))
	})
}

// v10 4.6 / v12 5.6: bans.
func TestAuthBan_4_6(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		r.Join(bob)
		r.Join(carol)
		// 4.6.1: the banner must be joined.
		wantRejected(t, r, r.Build(roomstest.Member(dave, bob, "ban")), "membership", "ban: sender is not joined")
		// 4.6.2: at the ban level and above the target; also users not in the room.
		wantAllowed(t, r, r.Build(roomstest.Member(alice, bob, "ban")))
		wantAllowed(t, r, r.Build(roomstest.Member(alice, dave, "ban")))
		// 4.6.3: otherwise.
		wantRejected(t, r, r.Build(roomstest.Member(bob, carol, "ban")), "membership", "below the ban level 50")
		setLevels(r, func(c map[string]any) {
			users := subMap(c, "users")
			users[bob], users[carol] = int64(50), int64(50)
		})
		wantRejected(t, r, r.Build(roomstest.Member(bob, carol, "ban")), "membership", "target's power level 50 is not below the sender's 50")
	})
}

// v10 4.7 / v12 5.7: knocks.
func TestAuthKnock_4_7(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		for _, rule := range []string{"knock", "knock_restricted"} {
			t.Run(rule, func(t *testing.T) {
				r := newRoom(t, v, roomstest.Options{JoinRule: rule})
				r.Invite(alice, carol)
				r.Join(bob)
				r.Ban(alice, dave)
				// 4.7.3: not banned, invited or joined.
				wantAllowed(t, r, r.Build(roomstest.Member(ann, ann, "knock")))
				// 4.7.2: users knock only for themselves.
				wantRejected(t, r, r.Build(roomstest.Member(alice, ann, "knock")), "membership", "knock: sender "+alice+" is not the state key")
				// 4.7.4: otherwise.
				wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "knock")), "membership", "already join")
				wantRejected(t, r, r.Build(roomstest.Member(carol, carol, "knock")), "membership", "already invite")
				wantRejected(t, r, r.Build(roomstest.Member(dave, dave, "knock")), "membership", "already ban")
			})
		}
		// 4.7.1: the join rule must allow knocking.
		for _, rule := range []string{"public", "invite", "restricted"} {
			r := newRoom(t, v, roomstest.Options{JoinRule: rule})
			wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "knock")), "membership", `join rule "`+rule+`" does not allow knocking`)
		}
	})
}

// v10 4.8 / v12 5.8: unknown memberships.
func TestAuthMember_4_8_UnknownMembership(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{})
		wantRejected(t, r, r.Build(roomstest.Member(bob, bob, "visit")), "membership", `unknown membership "visit"`)
		wantAllowed(t, r, r.Build(roomstest.Member(bob, bob, "join")))
	})
}

// v12 5 with infinite creator power: nobody can kick or ban a creator,
// creators can kick or ban anyone else, and two creators cannot act on
// each other.
func TestAuthMember_v12_CreatorsInfinitePower(t *testing.T) {
	v := version(t, "12")
	r := newRoom(t, v, roomstest.Options{AdditionalCreators: []string{carol}})
	r.Join(bob)
	r.Join(carol)
	setUser(r, bob, 100)
	wantRejected(t, r, r.Build(roomstest.Member(bob, alice, "ban")), "membership", "ban: the target's power level infinite (creator) is not below the sender's 100")
	wantRejected(t, r, r.Build(roomstest.Member(bob, alice, "leave")), "membership", "kick: the target's power level infinite (creator)")
	wantRejected(t, r, r.Build(roomstest.Member(alice, carol, "ban")), "membership", "infinite (creator) is not below the sender's infinite (creator)")
	wantAllowed(t, r, r.Build(roomstest.Member(alice, bob, "ban")))
	wantAllowed(t, r, r.Build(roomstest.Member(carol, bob, "leave")))

	// Version 10 has no such privilege: an equal admin cannot be banned,
	// and the creator's 100 can be matched.
	r10 := newRoom(t, version(t, "10"), roomstest.Options{})
	r10.Join(bob)
	setUser(r10, bob, 100)
	wantRejected(t, r10, r10.Build(roomstest.Member(bob, alice, "ban")), "membership", "target's power level 100 is not below the sender's 100")
}
