package rooms

import (
	"crypto/ed25519"
	"sort"
)

// checkMembership applies v10 rule 4 / v12 rule 5 to an m.room.member
// event. Every branch ends in a verdict: membership events never reach the
// later rules.
func (c *authCheck) checkMembership() *AuthError {
	ev := c.ev
	// v10 4.1 / v12 5.1: a state key and a membership.
	target, ok := ev.StateKey()
	if !ok {
		return reject(ev, "membership", "the member event has no state_key")
	}
	membership, ok := ev.Content()["membership"].(string)
	if !ok {
		return reject(ev, "membership", "content has no membership")
	}
	// v10 4.2 / v12 5.2: join_authorised_via_users_server needs that
	// user's server's signature.
	if c.v.RestrictedJoins {
		if raw, present := ev.Content()["join_authorised_via_users_server"]; present {
			via, isString := raw.(string)
			if !isString {
				return reject(ev, "membership", "join_authorised_via_users_server is not a valid user ID (not a string)")
			}
			if _, err := ParseUserID(via); err != nil {
				return reject(ev, "membership", "join_authorised_via_users_server is not a valid user ID (%s)", idProblem(err))
			}
			if !hasEd25519Signature(ev.Object(), serverOfID(via)) {
				return reject(ev, "membership", "the event is not signed by %s, the server of the authorising user", serverOfID(via))
			}
		}
	}
	switch {
	case membership == membershipJoin:
		return c.checkJoin(target)
	case membership == membershipInvite:
		return c.checkInvite(target)
	case membership == membershipLeave:
		return c.checkLeave(target)
	case membership == membershipBan:
		return c.checkBan(target)
	case membership == membershipKnock && c.v.Knocking:
		return c.checkKnock(target)
	default:
		// v10 4.8 / v12 5.8: unknown membership.
		return reject(ev, "membership", "unknown membership %q", membership)
	}
}

// hasEd25519Signature reports whether obj carries a signature from server
// under an ed25519 key. Whether it verifies is VerifyEventSignatures' job.
func hasEd25519Signature(obj map[string]any, server string) bool {
	for keyID := range Signatures(obj, server) {
		if IsEd25519KeyID(keyID) {
			return true
		}
	}
	return false
}

// checkJoin applies v10 4.3 / v12 5.3.
func (c *authCheck) checkJoin(target string) *AuthError {
	ev := c.ev
	// v10 4.3.1 / v12 5.3.1: the creator's join right after the create.
	if prev := ev.PrevEvents(); len(prev) == 1 && prev[0] == c.create.EventID() {
		if creator, ok := joinCreator(c.create); ok && target == creator {
			return nil
		}
	}
	// v10 4.3.2 / v12 5.3.2: users join only themselves.
	if ev.Sender() != target {
		return reject(ev, "membership", "join: sender %s is not the state key %s", ev.Sender(), target)
	}
	current := c.membership(target)
	// v10 4.3.3 / v12 5.3.3.
	if current == membershipBan {
		return reject(ev, "membership", "join: sender is banned")
	}
	rule := c.joinRule()
	switch {
	case rule == joinRuleInvite, rule == joinRuleKnock && c.v.Knocking:
		// v10 4.3.4 / v12 5.3.4: invite or knock rooms need an invite
		// (or an existing join).
		if current == membershipInvite || current == membershipJoin {
			return nil
		}
		return reject(ev, "membership", "join: the join rule is %s and the sender is not invited (membership %s)", rule, current)
	case rule == joinRuleRestricted && c.v.RestrictedJoins, rule == joinRuleKnockRestrict && c.v.KnockRestricted:
		// v10 4.3.5 / v12 5.3.5: restricted rooms.
		// 4.3.5.1: already joined or invited.
		if current == membershipInvite || current == membershipJoin {
			return nil
		}
		// 4.3.5.2: an authorising user able to invite, which means joined
		// (v10 4.4.2) with at least the invite level (v10 4.4.4).
		via, ok := ev.Content()["join_authorised_via_users_server"].(string)
		if !ok {
			return reject(ev, "membership", "join: the join rule is %s and the join has no join_authorised_via_users_server", rule)
		}
		if m := c.membership(via); m != membershipJoin {
			return reject(ev, "membership", "join: the authorising user %s is not joined (membership %s)", via, m)
		}
		if p := c.pl.user(via); p.less(finite(c.pl.invite())) {
			return reject(ev, "membership", "join: the authorising user %s has power level %s, below the invite level %d", via, p, c.pl.invite())
		}
		// 4.3.5.3: otherwise, allow.
		return nil
	case rule == joinRulePublic:
		// v10 4.3.6 / v12 5.3.6.
		return nil
	default:
		// v10 4.3.7 / v12 5.3.7.
		if rule == "" {
			return reject(ev, "membership", "join: the room has no join rule")
		}
		return reject(ev, "membership", "join: the join rule %q does not allow joining", rule)
	}
}

// checkInvite applies v10 4.4 / v12 5.4.
func (c *authCheck) checkInvite(target string) *AuthError {
	ev := c.ev
	// v10 4.4.1 / v12 5.4.1: third-party invites.
	if raw, present := ev.Content()["third_party_invite"]; present {
		return c.checkThirdPartyInvite(target, raw)
	}
	// v10 4.4.2 / v12 5.4.2.
	if m := c.membership(ev.Sender()); m != membershipJoin {
		return reject(ev, "membership", "invite: sender is not joined (membership %s)", m)
	}
	// v10 4.4.3 / v12 5.4.3.
	if m := c.membership(target); m == membershipJoin || m == membershipBan {
		return reject(ev, "membership", "invite: the target's membership is %s", m)
	}
	// v10 4.4.4 / v12 5.4.4, else 4.4.5 / 5.4.5.
	if p := c.pl.user(ev.Sender()); p.less(finite(c.pl.invite())) {
		return reject(ev, "membership", "invite: sender's power level %s is below the invite level %d", p, c.pl.invite())
	}
	return nil
}

// checkThirdPartyInvite applies v10 4.4.1 / v12 5.4.1.
func (c *authCheck) checkThirdPartyInvite(target string, raw any) *AuthError {
	ev := c.ev
	// 4.4.1.1: the target is banned.
	if c.membership(target) == membershipBan {
		return reject(ev, "membership", "third-party invite: the target is banned")
	}
	tpi, _ := raw.(map[string]any)
	// 4.4.1.2: a signed object.
	signed, ok := tpi["signed"].(map[string]any)
	if !ok {
		return reject(ev, "membership", "third-party invite: no signed object")
	}
	// 4.4.1.3: signed has mxid and token.
	mxid, okMXID := signed["mxid"].(string)
	token, okToken := signed["token"].(string)
	if !okMXID || !okToken {
		return reject(ev, "membership", "third-party invite: signed lacks mxid or token")
	}
	// 4.4.1.4: mxid is the target.
	if mxid != target {
		return reject(ev, "membership", "third-party invite: signed mxid %s is not the state key %s", mxid, target)
	}
	// 4.4.1.5: the m.room.third_party_invite event for the token.
	tpiEvent := c.state[StateTuple{typeThirdPartyInvite, token}]
	if tpiEvent == nil {
		return reject(ev, "membership", "third-party invite: no m.room.third_party_invite event for the token")
	}
	// 4.4.1.6: the same sender.
	if tpiEvent.Sender() != ev.Sender() {
		return reject(ev, "membership", "third-party invite: sender is not the sender of the m.room.third_party_invite event")
	}
	// 4.4.1.7: any signature in signed verifies with any of its public
	// keys; 4.4.1.8: otherwise reject.
	if signedByAnyKey(signed, thirdPartyInviteKeys(tpiEvent.Content())) {
		return nil
	}
	return reject(ev, "membership", "third-party invite: no signature in signed verifies with the invite's public keys")
}

// thirdPartyInviteKeys returns the decodable ed25519 keys of an
// m.room.third_party_invite content: public_key and every
// public_keys[].public_key, in standard or URL-safe base64.
func thirdPartyInviteKeys(content map[string]any) []ed25519.PublicKey {
	var raws []string
	if s, ok := content["public_key"].(string); ok {
		raws = append(raws, s)
	}
	if list, ok := content["public_keys"].([]any); ok {
		for _, e := range list {
			if obj, ok := e.(map[string]any); ok {
				if s, ok := obj["public_key"].(string); ok {
					raws = append(raws, s)
				}
			}
		}
	}
	var keys []ed25519.PublicKey
	for _, s := range raws {
		b, err := DecodeBase64(s)
		if err != nil {
			b, err = DecodeBase64URL(s)
		}
		if err == nil && len(b) == ed25519.PublicKeySize {
			keys = append(keys, ed25519.PublicKey(b))
		}
	}
	return keys
}

// signedByAnyKey reports whether any ed25519 signature in signed (from any
// entity) verifies with any of keys.
func signedByAnyKey(signed map[string]any, keys []ed25519.PublicKey) bool {
	if len(keys) == 0 {
		return false
	}
	sigs, _ := signed["signatures"].(map[string]any)
	entities := make([]string, 0, len(sigs))
	for entity := range sigs {
		entities = append(entities, entity)
	}
	sort.Strings(entities)
	for _, entity := range entities {
		for keyID := range Signatures(signed, entity) {
			if !IsEd25519KeyID(keyID) {
				continue
			}
			for _, pub := range keys {
				if VerifyJSONSignature(signed, entity, keyID, pub) == nil {
					return true
				}
			}
		}
	}
	return false
}

// checkLeave applies v10 4.5 / v12 5.5 (leaving, rejecting an invite,
// retracting a knock, kicking and unbanning).
func (c *authCheck) checkLeave(target string) *AuthError {
	ev := c.ev
	// v10 4.5.1 / v12 5.5.1: leaving oneself.
	if ev.Sender() == target {
		switch m := c.membership(target); m {
		case membershipInvite, membershipJoin, membershipKnock:
			return nil
		default:
			return reject(ev, "membership", "leave: the sender's membership is %s, not invite, join or knock", m)
		}
	}
	// v10 4.5.2 / v12 5.5.2.
	if m := c.membership(ev.Sender()); m != membershipJoin {
		return reject(ev, "membership", "kick: sender is not joined (membership %s)", m)
	}
	senderPower := c.pl.user(ev.Sender())
	// v10 4.5.3 / v12 5.5.3: unbanning needs the ban level.
	if c.membership(target) == membershipBan && senderPower.less(finite(c.pl.ban())) {
		return reject(ev, "membership", "unban: sender's power level %s is below the ban level %d", senderPower, c.pl.ban())
	}
	// v10 4.5.4 / v12 5.5.4, else 4.5.5 / 5.5.5.
	if senderPower.less(finite(c.pl.kick())) {
		return reject(ev, "membership", "kick: sender's power level %s is below the kick level %d", senderPower, c.pl.kick())
	}
	if targetPower := c.pl.user(target); !targetPower.less(senderPower) {
		return reject(ev, "membership", "kick: the target's power level %s is not below the sender's %s", targetPower, senderPower)
	}
	return nil
}

// checkBan applies v10 4.6 / v12 5.6.
func (c *authCheck) checkBan(target string) *AuthError {
	ev := c.ev
	// v10 4.6.1 / v12 5.6.1.
	if m := c.membership(ev.Sender()); m != membershipJoin {
		return reject(ev, "membership", "ban: sender is not joined (membership %s)", m)
	}
	// v10 4.6.2 / v12 5.6.2, else 4.6.3 / 5.6.3.
	senderPower := c.pl.user(ev.Sender())
	if senderPower.less(finite(c.pl.ban())) {
		return reject(ev, "membership", "ban: sender's power level %s is below the ban level %d", senderPower, c.pl.ban())
	}
	if targetPower := c.pl.user(target); !targetPower.less(senderPower) {
		return reject(ev, "membership", "ban: the target's power level %s is not below the sender's %s", targetPower, senderPower)
	}
	return nil
}

// checkKnock applies v10 4.7 / v12 5.7.
func (c *authCheck) checkKnock(target string) *AuthError {
	ev := c.ev
	// v10 4.7.1 / v12 5.7.1.
	rule := c.joinRule()
	if !(rule == joinRuleKnock || rule == joinRuleKnockRestrict && c.v.KnockRestricted) {
		return reject(ev, "membership", "knock: the join rule %q does not allow knocking", rule)
	}
	// v10 4.7.2 / v12 5.7.2.
	if ev.Sender() != target {
		return reject(ev, "membership", "knock: sender %s is not the state key %s", ev.Sender(), target)
	}
	// v10 4.7.3 / v12 5.7.3, else 4.7.4 / 5.7.4.
	switch m := c.membership(target); m {
	case membershipBan, membershipInvite, membershipJoin:
		return reject(ev, "membership", "knock: the sender's membership is already %s", m)
	default:
		return nil
	}
}
