package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-matrix/ferry/hostapi/client"
)

func init() {
	registerHostVerb(sendVerb)
	registerHostVerb(eventsVerb)
	registerHostVerb(destinationsVerb)
}

var sendVerb = hostVerb{
	name:    "send",
	args:    "ROOM --as USER [--txn-id ID] [--] TEXT...",
	summary: "send a text message to a room as a local user",
	minArgs: 2, maxArgs: -1,
	setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
		as := set.String("as", "", "the joined local user who sends (required)")
		txnID := set.String("txn-id", "", "transaction ID: sending again with the same one gives the same event (default: a new random one)")
		return func(ctx context.Context, call *hostCall) error {
			if err := require("as", *as); err != nil {
				return err
			}
			text := strings.Join(call.args[1:], " ")
			if strings.TrimSpace(text) == "" {
				return usageErrorf("the message text is empty")
			}
			if *txnID == "" {
				*txnID = "cli-" + rand.Text()
			}
			roomID, err := call.roomID(ctx, call.args[0])
			if err != nil {
				return err
			}
			eventID, err := call.client.Send(ctx, roomID, client.SendRequest{
				Sender:  call.userID(*as),
				Type:    "m.room.message",
				Content: map[string]any{"msgtype": "m.text", "body": text},
				TxnID:   *txnID,
			})
			if err != nil {
				return err
			}
			return call.printEventID(eventID)
		}
	},
}

// eventsPageSize is how many items `ferry events` asks for at a time.
const eventsPageSize = 1000

var eventsVerb = hostVerb{
	name:    "events",
	args:    "[--since TOKEN] [--limit N] [--follow]",
	summary: "print the host event stream: POS KIND ROOM SENDER TYPE SUMMARY per line",
	maxArgs: 0,
	setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
		since := set.String("since", "0", "print the items after this position (0: from the start)")
		follow := set.Bool("follow", false, "keep printing items as they arrive, until interrupted")
		limit := set.Int("limit", 0, "print at most this many items (0: all; ignored with --follow)")
		return func(ctx context.Context, call *hostCall) error {
			if *limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			print := func(it client.Item) error {
				if call.json {
					return call.printJSON(it)
				}
				_, err := fmt.Fprintln(call.stdout, itemLine(it))
				return err
			}
			if *follow {
				return followEvents(ctx, call, *since, print)
			}
			position, printed := *since, 0
			for *limit == 0 || printed < *limit {
				want := eventsPageSize
				if *limit > 0 {
					want = min(want, *limit-printed)
				}
				page, err := call.client.Events(ctx, position, 0, want)
				if err != nil {
					return err
				}
				if len(page.Items) == 0 {
					break
				}
				for _, it := range page.Items[:min(len(page.Items), want)] {
					if err := print(it); err != nil {
						return err
					}
					position = it.Pos
					printed++
				}
			}
			return nil
		}
	},
}

// followEvents streams items to print until the user interrupts, telling
// them on stderr when the stream breaks and is opened again.
func followEvents(ctx context.Context, call *hostCall, since string, print func(client.Item) error) error {
	c, err := client.New(call.address, call.token, client.WithReconnectHook(func(err error, delay time.Duration) {
		fmt.Fprintf(call.stderr, "ferry: event stream interrupted (%v); reconnecting in %s\n", err, delay)
	}))
	if err != nil {
		return err
	}
	err = c.Follow(ctx, since, print)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted: the normal end of --follow
	}
	return err
}

var destinationsVerb = hostVerb{
	name:    "destinations",
	args:    "",
	summary: "show the delivery health of every remote server",
	maxArgs: 0,
	setup: func(*flag.FlagSet) func(context.Context, *hostCall) error {
		return func(ctx context.Context, call *hostCall) error {
			list, err := call.client.Destinations(ctx)
			if err != nil {
				return err
			}
			if call.json {
				if list == nil {
					list = []client.Destination{}
				}
				return call.printJSON(map[string]any{"destinations": list})
			}
			if len(list) == 0 {
				fmt.Fprintln(call.stderr, "no remote servers yet")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(call.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVER\tSTATUS\tQUEUED\tSENT\tLAST SUCCESS\tLAST ERROR")
			for _, d := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.ServerName, destinationStatus(d, now), d.Queued, d.TxnsSent,
					ago(client.Time(d.LastSuccessTS), now), orDash(oneLine(truncate(d.LastError, maxSummary))))
			}
			return tw.Flush()
		}
	},
}
