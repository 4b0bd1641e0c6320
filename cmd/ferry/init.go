package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ferry-matrix/ferry/config"
)

func init() {
	registerCommand("init", "write a commented configuration file", runInit)
}

func runInit(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	set := flag.NewFlagSet("init", flag.ContinueOnError)
	set.SetOutput(stderr)
	set.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry init [flags]")
		fmt.Fprintln(stderr, "\nWrites a configuration file with every key, its default and what it does.")
		fmt.Fprintln(stderr)
		set.PrintDefaults()
	}
	out := set.String("config", "ferry.toml", "file to write, or - for standard output")
	force := set.Bool("force", false, "overwrite an existing file")
	cfg := config.Default()
	set.StringVar(&cfg.ServerName, "server-name", cfg.ServerName, "the server name (hostname[:port]) to write")
	set.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "the data directory to write")
	set.StringVar(&cfg.Federation.Listen, "federation-listen", cfg.Federation.Listen, "the federation listen address to write")
	if err := set.Parse(args); err != nil {
		return 2
	}
	if set.NArg() > 0 {
		set.Usage()
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "ferry init: %v\n", err)
		return 1
	}
	text, err := config.Render(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ferry init: %v\n", err)
		return 1
	}
	if *out == "-" {
		_, _ = stdout.Write(text)
		return 0
	}
	if err := writeNewFile(*out, text, *force); err != nil {
		fmt.Fprintf(stderr, "ferry init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s; start the server with: ferry serve -config %s\n", *out, *out)
	return 0
}

// writeNewFile writes a config file readable by its owner only (it may
// come to hold the host API token), refusing to replace one unless force.
func writeNewFile(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; use -force to overwrite it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
