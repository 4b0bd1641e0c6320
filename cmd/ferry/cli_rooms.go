package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/ferry-matrix/ferry/hostapi/client"
)

func init() {
	roomsVerbs = append(roomsVerbs,
		moderationVerb("kick", "remove a user from a room", (*client.Client).Kick),
		moderationVerb("ban", "ban a user from a room", (*client.Client).Ban),
		moderationVerb("unban", "lift a user's ban", (*client.Client).Unban),
	)
	registerHostGroup("rooms", "manage rooms over the host API (create, join, invite, leave, kick, ban, list, state, messages...)", roomsVerbs)
}

// moderationVerb is `ferry rooms kick|ban|unban ROOM USER --as SENDER`,
// which differ only in the route they call.
func moderationVerb(name, summary string, call func(*client.Client, context.Context, string, client.ModerationRequest) (string, error)) hostVerb {
	return hostVerb{
		name:    "rooms " + name,
		args:    "ROOM USER --as SENDER [--reason REASON]",
		summary: summary,
		minArgs: 2, maxArgs: 2,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			as := set.String("as", "", "the joined local user with the power to do it (required)")
			reason := set.String("reason", "", "reason given to the room")
			return func(ctx context.Context, c *hostCall) error {
				if err := require("as", *as); err != nil {
					return err
				}
				roomID, err := c.roomID(ctx, c.args[0])
				if err != nil {
					return err
				}
				eventID, err := call(c.client, ctx, roomID, client.ModerationRequest{Sender: c.userID(*as), UserID: c.userID(c.args[1]), Reason: *reason})
				if err != nil {
					return err
				}
				return c.printEventID(eventID)
			}
		},
	}
}

// printEventID prints the ID of the event an operation created, or the
// whole answer with --json.
func (c *hostCall) printEventID(eventID string) error {
	if c.json {
		return c.printJSON(map[string]string{"event_id": eventID})
	}
	_, err := fmt.Fprintln(c.stdout, eventID)
	return err
}

var roomsVerbs = []hostVerb{
	{
		name:    "rooms create",
		args:    "--creator USER [--name NAME] [--topic TOPIC] [--alias ALIAS] [--preset public_chat|private_chat] [--version 10|12] [--invite USER]...",
		summary: "create a room and print its ID",
		maxArgs: 0,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			creator := set.String("creator", "", "the local user who creates the room (required)")
			name := set.String("name", "", "room name")
			topic := set.String("topic", "", "room topic")
			alias := set.String("alias", "", "an alias of this server for the room (#name:server, or just name)")
			preset := set.String("preset", "", "public_chat (anyone may join) or private_chat (invite only, the default)")
			version := set.String("version", "", "room version (default: the server's rooms.default_version)")
			var invites stringList
			set.Var(&invites, "invite", "invite this user once the room exists (repeatable)")
			return func(ctx context.Context, call *hostCall) error {
				if err := require("creator", *creator); err != nil {
					return err
				}
				if *preset != "" && *preset != client.PresetPublicChat && *preset != client.PresetPrivateChat {
					return usageErrorf("--preset must be %s or %s, not %q", client.PresetPublicChat, client.PresetPrivateChat, *preset)
				}
				resp, err := call.client.CreateRoom(ctx, client.CreateRoomRequest{
					Creator:     call.userID(*creator),
					RoomVersion: *version,
					Preset:      *preset,
					Name:        *name,
					Topic:       *topic,
					Alias:       call.alias(*alias),
					Invite:      call.userIDs(invites),
				})
				if err != nil {
					return err
				}
				if call.json {
					err = call.printJSON(resp)
				} else {
					_, err = fmt.Fprintln(call.stdout, resp.RoomID)
				}
				if err != nil || len(resp.FailedInvites) == 0 {
					return err
				}
				// The room exists, so its ID is printed all the same; the
				// status tells scripts that not everything was done.
				invitees := make([]string, 0, len(resp.FailedInvites))
				for user := range resp.FailedInvites {
					invitees = append(invitees, user)
				}
				sort.Strings(invitees)
				for _, user := range invitees {
					fmt.Fprintf(call.stderr, "ferry: room %s created, but inviting %s failed: %s\n", resp.RoomID, user, resp.FailedInvites[user])
				}
				return &exitStatusError{status: 1}
			}
		},
	},
	{
		name:    "rooms join",
		args:    "ROOM_ID_OR_ALIAS --as USER [--via SERVER]...",
		summary: "join a local user to a room, here or over federation",
		minArgs: 1, maxArgs: 1,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			as := set.String("as", "", "the local user who joins (required)")
			var via stringList
			set.Var(&via, "via", "a server in the room to join through (repeatable)")
			return func(ctx context.Context, call *hostCall) error {
				if err := require("as", *as); err != nil {
					return err
				}
				resp, err := call.client.JoinRoom(ctx, call.args[0], client.JoinRequest{UserID: call.userID(*as), Via: via})
				if err != nil {
					return err
				}
				if call.json {
					return call.printJSON(resp)
				}
				_, err = fmt.Fprintln(call.stdout, resp.RoomID)
				return err
			}
		},
	},
	{
		name:    "rooms invite",
		args:    "ROOM USER --as SENDER",
		summary: "invite a user, local or remote, to a room",
		minArgs: 2, maxArgs: 2,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			as := set.String("as", "", "the joined local user who invites (required)")
			return func(ctx context.Context, call *hostCall) error {
				if err := require("as", *as); err != nil {
					return err
				}
				roomID, err := call.roomID(ctx, call.args[0])
				if err != nil {
					return err
				}
				eventID, err := call.client.Invite(ctx, roomID, client.InviteRequest{Sender: call.userID(*as), UserID: call.userID(call.args[1])})
				if err != nil {
					return err
				}
				return call.printEventID(eventID)
			}
		},
	},
	{
		name:    "rooms leave",
		args:    "ROOM --as USER [--reason REASON]",
		summary: "make a local user leave a room (or decline an invite)",
		minArgs: 1, maxArgs: 1,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			as := set.String("as", "", "the local user who leaves (required)")
			reason := set.String("reason", "", "reason given to the room")
			return func(ctx context.Context, call *hostCall) error {
				if err := require("as", *as); err != nil {
					return err
				}
				roomID, err := call.roomID(ctx, call.args[0])
				if err != nil {
					return err
				}
				eventID, err := call.client.Leave(ctx, roomID, client.LeaveRequest{UserID: call.userID(*as), Reason: *reason})
				if err != nil {
					return err
				}
				return call.printEventID(eventID)
			}
		},
	},
	{
		name:    "rooms list",
		args:    "",
		summary: "list the rooms local users are joined to",
		maxArgs: 0,
		setup: func(*flag.FlagSet) func(context.Context, *hostCall) error {
			return func(ctx context.Context, call *hostCall) error {
				list, err := call.client.Rooms(ctx)
				if err != nil {
					return err
				}
				if call.json {
					if list == nil {
						list = []client.RoomSummary{}
					}
					return call.printJSON(map[string]any{"rooms": list})
				}
				if len(list) == 0 {
					fmt.Fprintln(call.stderr, "no rooms with joined local users")
					return nil
				}
				tw := tabwriter.NewWriter(call.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROOM\tVERSION\tMEMBERS\tSERVERS\tLOCAL USERS\tNAME")
				for _, r := range list {
					name := r.Name
					if r.CanonicalAlias != "" {
						name = strings.TrimSpace(r.CanonicalAlias + " " + name)
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.RoomID, r.RoomVersion, r.JoinedMembers, len(r.Servers),
						orDash(strings.Join(r.JoinedLocalUsers, ",")), orDash(oneLine(name)))
				}
				return tw.Flush()
			}
		},
	},
	{
		name:    "rooms state",
		args:    "ROOM",
		summary: "show a room's current state",
		minArgs: 1, maxArgs: 1,
		setup: func(*flag.FlagSet) func(context.Context, *hostCall) error {
			return func(ctx context.Context, call *hostCall) error {
				roomID, err := call.roomID(ctx, call.args[0])
				if err != nil {
					return err
				}
				state, err := call.client.State(ctx, roomID)
				if err != nil {
					return err
				}
				if call.json {
					if state == nil {
						state = []json.RawMessage{}
					}
					return call.printJSON(map[string]any{"state": state})
				}
				views := make([]eventView, 0, len(state))
				for _, raw := range state {
					if ev, ok := parseEventView(raw); ok {
						views = append(views, ev)
					}
				}
				// By type, then state key: the order people look things up in.
				sort.SliceStable(views, func(i, j int) bool {
					if views[i].Type != views[j].Type {
						return views[i].Type < views[j].Type
					}
					return stateKeyOf(views[i]) < stateKeyOf(views[j])
				})
				tw := tabwriter.NewWriter(call.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TYPE\tSTATE KEY\tSENDER\tCONTENT")
				for _, ev := range views {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ev.Type, orDash(oneLine(stateKeyOf(ev))), ev.Sender, summarizeEvent(ev))
				}
				return tw.Flush()
			}
		},
	},
	{
		name:    "rooms messages",
		args:    "ROOM [--limit N] [--from TOKEN]",
		summary: "show a room's latest events, oldest first (page back with --from)",
		minArgs: 1, maxArgs: 1,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			limit := set.Int("limit", 20, "events per page (at most 1000)")
			from := set.String("from", "", "continue from this token (printed after the previous page)")
			return func(ctx context.Context, call *hostCall) error {
				if *limit < 1 || *limit > 1000 {
					return usageErrorf("--limit must be between 1 and 1000")
				}
				roomID, err := call.roomID(ctx, call.args[0])
				if err != nil {
					return err
				}
				page, err := call.client.Messages(ctx, roomID, client.MessagesRequest{From: *from, Limit: *limit})
				if err != nil {
					return err
				}
				if call.json {
					if page.Chunk == nil {
						page.Chunk = []json.RawMessage{}
					}
					return call.printJSON(page)
				}
				// The page comes newest first; people read a timeline
				// from the top down.
				chunk := slices.Clone(page.Chunk)
				slices.Reverse(chunk)
				for _, raw := range chunk {
					ev, ok := parseEventView(raw)
					if !ok {
						fmt.Fprintln(call.stdout, compactJSON(raw))
						continue
					}
					fmt.Fprintf(call.stdout, "%s %s %s %s %s\n", formatTime(ev.OriginServerTS), ev.EventID, ev.Sender, ev.Type, summarizeEvent(ev))
				}
				if page.End != "" {
					fmt.Fprintf(call.stderr, "older events: ferry rooms messages %s --from %s\n", call.args[0], page.End)
				}
				return nil
			}
		},
	},
}

func stateKeyOf(ev eventView) string {
	if ev.StateKey == nil {
		return ""
	}
	return *ev.StateKey
}
