package rooms

// Redaction (spec: "Redactions" in the client-server API, and each room
// version's "Redactions" section): a redacted event keeps a fixed set of
// top-level keys and, inside content, only the keys that the auth rules
// depend on.

var redactionTopLevel = map[RedactionRules]map[string]bool{
	RedactionV9: setOf("event_id", "type", "room_id", "sender", "state_key", "content",
		"hashes", "signatures", "depth", "prev_events", "prev_state", "auth_events",
		"origin", "origin_server_ts", "membership"),
	RedactionV11: setOf("event_id", "type", "room_id", "sender", "state_key", "content",
		"hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"),
}

// redactionContent lists, per rule set and event type, the content keys
// that survive; a nil set with keepAllContent means every key survives.
var redactionContent = map[RedactionRules]map[string]map[string]bool{
	RedactionV9: {
		"m.room.member":             setOf("membership", "join_authorised_via_users_server"),
		"m.room.create":             setOf("creator"),
		"m.room.join_rules":         setOf("join_rule", "allow"),
		"m.room.power_levels":       setOf("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"),
		"m.room.history_visibility": setOf("history_visibility"),
	},
	RedactionV11: {
		"m.room.member":             setOf("membership", "join_authorised_via_users_server"),
		"m.room.join_rules":         setOf("join_rule", "allow"),
		"m.room.power_levels":       setOf("ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"),
		"m.room.history_visibility": setOf("history_visibility"),
		"m.room.redaction":          setOf("redacts"),
	},
}

func setOf(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// Redact returns the redacted form of the event object obj under v's rules.
// obj is not modified; the result shares unmodified sub-values with it.
func Redact(v Version, obj map[string]any) map[string]any {
	keep := redactionTopLevel[v.Redaction]
	out := make(map[string]any, len(keep))
	for k, val := range obj {
		if keep[k] {
			out[k] = val
		}
	}
	content, _ := obj["content"].(map[string]any)
	typ, _ := obj["type"].(string)
	out["content"] = redactContent(v, typ, content)
	return out
}

func redactContent(v Version, typ string, content map[string]any) map[string]any {
	out := map[string]any{}
	if v.Redaction == RedactionV11 && typ == "m.room.create" {
		for k, val := range content {
			out[k] = val
		}
		return out
	}
	keep := redactionContent[v.Redaction][typ]
	for k, val := range content {
		if keep[k] {
			out[k] = val
		}
	}
	if v.Redaction == RedactionV11 && typ == "m.room.member" {
		if tpi, ok := content["third_party_invite"].(map[string]any); ok {
			if signed, ok := tpi["signed"]; ok {
				out["third_party_invite"] = map[string]any{"signed": signed}
			}
		}
	}
	return out
}
