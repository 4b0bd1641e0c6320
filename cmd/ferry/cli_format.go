package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-matrix/ferry/hostapi/client"
)

// The human output of the host verbs: one line per event or item, the
// most telling field of each event type as its summary.

// eventView is the part of an event the human output shows.
type eventView struct {
	EventID        string          `json:"event_id"`
	Type           string          `json:"type"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        string          `json:"redacts"` // before room version 11
	Content        json.RawMessage `json:"content"`
}

// parseEventView reads the shown fields of an event; an event that does
// not parse is shown by its raw text.
func parseEventView(raw json.RawMessage) (eventView, bool) {
	var ev eventView
	if err := json.Unmarshal(raw, &ev); err != nil {
		return eventView{}, false
	}
	return ev, true
}

// maxSummary bounds the summary of content shown as JSON.
const maxSummary = 120

// summarizeEvent says in a few words what an event does.
func summarizeEvent(ev eventView) string {
	var content map[string]any
	_ = json.Unmarshal(ev.Content, &content) // a missing or odd content shows as empty
	str := func(key string) string {
		s, _ := content[key].(string)
		return s
	}
	stateKey := ""
	if ev.StateKey != nil {
		stateKey = *ev.StateKey
	}
	switch ev.Type {
	case "m.room.message":
		body := oneLine(str("body"))
		if msgtype := str("msgtype"); msgtype != "m.text" && msgtype != "" {
			return msgtype + ": " + body
		}
		return body
	case "m.room.member":
		s := str("membership") + " " + stateKey
		if name := str("displayname"); name != "" {
			s += " (" + oneLine(name) + ")"
		}
		if reason := str("reason"); reason != "" {
			s += ": " + oneLine(reason)
		}
		return s
	case "m.room.create":
		version := str("room_version")
		if version == "" {
			version = "1"
		}
		return "room version " + version
	case "m.room.name":
		return "name: " + oneLine(str("name"))
	case "m.room.topic":
		return "topic: " + oneLine(str("topic"))
	case "m.room.canonical_alias":
		return "alias: " + str("alias")
	case "m.room.join_rules":
		return "join rule: " + str("join_rule")
	case "m.room.history_visibility":
		return "history visibility: " + str("history_visibility")
	case "m.room.redaction":
		redacts := ev.Redacts
		if redacts == "" {
			redacts = str("redacts")
		}
		s := "redacts " + redacts
		if reason := str("reason"); reason != "" {
			s += ": " + oneLine(reason)
		}
		return s
	case "m.room.power_levels":
		return "power levels: " + summarizePowerUsers(content["users"])
	case "m.room.encrypted":
		return "(encrypted)"
	}
	if len(content) == 0 {
		if ev.StateKey != nil && stateKey != "" {
			return "(empty) " + stateKey
		}
		return "(empty)"
	}
	return compactJSON(ev.Content)
}

// summarizeEDU says what an EDU of the stream reports, and who.
func summarizeEDU(raw json.RawMessage) (eduType, who, summary string) {
	var edu struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &edu); err != nil {
		return "?", "-", compactJSON(raw)
	}
	switch edu.Type {
	case "m.typing":
		var typing struct {
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if json.Unmarshal(edu.Content, &typing) == nil && typing.UserID != "" {
			if typing.Typing {
				return edu.Type, typing.UserID, "typing"
			}
			return edu.Type, typing.UserID, "stopped typing"
		}
	case "m.receipt":
		// {room: {receipt type: {user: {"event_ids": [...]}}}}
		var receipts map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
		}
		if json.Unmarshal(edu.Content, &receipts) == nil && len(receipts) > 0 {
			var parts []string
			users := map[string]bool{}
			for _, byType := range receipts {
				for receiptType, byUser := range byType {
					for user, receipt := range byUser {
						users[user] = true
						parts = append(parts, fmt.Sprintf("%s %s %s", user, receiptType, strings.Join(receipt.EventIDs, ",")))
					}
				}
			}
			sort.Strings(parts)
			who := "-"
			if len(users) == 1 {
				for user := range users {
					who = user
				}
			}
			return edu.Type, who, strings.Join(parts, "; ")
		}
	}
	return edu.Type, "-", compactJSON(edu.Content)
}

// itemLine is the human line of a stream item:
// POS KIND ROOM SENDER TYPE SUMMARY.
func itemLine(it client.Item) string {
	room := it.RoomID
	if room == "" {
		room = "-"
	}
	if it.Kind == client.KindEDU {
		eduType, who, summary := summarizeEDU(it.EDU)
		return strings.Join([]string{it.Pos, it.Kind, room, who, eduType, summary}, " ")
	}
	ev, ok := parseEventView(it.Event)
	if !ok {
		return strings.Join([]string{it.Pos, it.Kind, room, "-", "-", compactJSON(it.Event)}, " ")
	}
	return strings.Join([]string{it.Pos, it.Kind, room, orDash(ev.Sender), orDash(ev.Type), summarizeEvent(ev)}, " ")
}

// oneLine keeps text on one line: line breaks become ⏎ and other control
// characters are dropped, so a message cannot forge further output lines.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return '⏎'
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
}

// compactJSON shows raw JSON on one line, cut at maxSummary runes.
func compactJSON(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return oneLine(truncate(string(raw), maxSummary))
	}
	encoded, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	return oneLine(truncate(string(encoded), maxSummary))
}

func truncate(s string, n int) string {
	runes := []rune(s)
	if len(runes) <= n {
		return s
	}
	return string(runes[:n]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatTime shows an event timestamp (ms) in local time.
func formatTime(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format("2006-01-02 15:04:05")
}

// ago says how long before now t was, "never" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

// destinationStatus sums up a destination's health in a few words.
func destinationStatus(d client.Destination, now time.Time) string {
	if until := client.Time(d.BackoffUntilTS); until.After(now) {
		return fmt.Sprintf("backing off (%d failures, retry %s)", d.Failures, ago(until, now))
	}
	if d.Failures > 0 {
		return fmt.Sprintf("failing (%d failures)", d.Failures)
	}
	if d.Active {
		return "sending"
	}
	return "ok"
}

// summarizePowerUsers lists the users of m.room.power_levels with their
// levels, sorted; the rest of the event rarely matters at a glance.
func summarizePowerUsers(users any) string {
	byUser, _ := users.(map[string]any)
	if len(byUser) == 0 {
		return "no users listed"
	}
	parts := make([]string, 0, len(byUser))
	for user, level := range byUser {
		parts = append(parts, fmt.Sprintf("%s=%v", user, level))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
