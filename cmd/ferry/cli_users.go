package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/ferry-matrix/ferry/hostapi/client"
)

func init() {
	registerHostGroup("users", "manage local users over the host API (add, list, remove)", usersVerbs)
}

var usersVerbs = []hostVerb{
	{
		name:    "users add",
		args:    "USER [--displayname NAME] [--avatar-url MXC_URL]",
		summary: "register a local user, or update its profile",
		minArgs: 1, maxArgs: 1,
		setup: func(set *flag.FlagSet) func(context.Context, *hostCall) error {
			displayName := set.String("displayname", "", "display name")
			avatarURL := set.String("avatar-url", "", "avatar (mxc:// URL)")
			return func(ctx context.Context, call *hostCall) error {
				user, err := call.client.PutUser(ctx, call.userID(call.args[0]), client.UserProfile{DisplayName: *displayName, AvatarURL: *avatarURL})
				if err != nil {
					return err
				}
				if call.json {
					return call.printJSON(user)
				}
				_, err = fmt.Fprintln(call.stdout, user.UserID)
				return err
			}
		},
	},
	{
		name:    "users list",
		args:    "",
		summary: "list the registered local users",
		maxArgs: 0,
		setup: func(*flag.FlagSet) func(context.Context, *hostCall) error {
			return func(ctx context.Context, call *hostCall) error {
				users, err := call.client.Users(ctx)
				if err != nil {
					return err
				}
				if call.json {
					if users == nil {
						users = []client.User{}
					}
					return call.printJSON(map[string]any{"users": users})
				}
				if len(users) == 0 {
					fmt.Fprintln(call.stderr, "no local users")
					return nil
				}
				tw := tabwriter.NewWriter(call.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USER\tDISPLAY NAME\tAVATAR")
				for _, u := range users {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", u.UserID, orDash(oneLine(u.DisplayName)), orDash(u.AvatarURL))
				}
				return tw.Flush()
			}
		},
	},
	{
		name:    "users remove",
		args:    "USER",
		summary: "make a local user leave its rooms and delete it",
		minArgs: 1, maxArgs: 1,
		setup: func(*flag.FlagSet) func(context.Context, *hostCall) error {
			return func(ctx context.Context, call *hostCall) error {
				if err := call.client.DeleteUser(ctx, call.userID(call.args[0])); err != nil {
					return err
				}
				if call.json {
					return call.printJSON(struct{}{})
				}
				return nil
			}
		},
	},
}
