package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal asks for a clean stop; a second one ends the
		// process at once. Not by giving the signal back to Go's default
		// handling: a process started with SIGINT ignored (a shell
		// script's background job) would then ignore it.
		<-signals
		cancel()
		// timeout(1) and a kill of the process group send the signal to
		// the process and to its group: it arrives twice, a moment
		// apart, and the copy is not a second request.
		repeat := time.After(signalRepeat)
	drain:
		for {
			select {
			case <-signals:
			case <-repeat:
				break drain
			}
		}
		sig := <-signals
		code := 128 + 2 // SIGINT's, as a shell reports it
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
		os.Exit(code)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// signalRepeat is how long after a first SIGINT or SIGTERM another is
// taken for a copy of it rather than a request to exit at once.
const signalRepeat = 250 * time.Millisecond

// Exit codes.
const (
	exitOK      = 0 // done, or stopped by a signal after a clean shutdown
	exitFailure = 1 // a runtime failure
	exitUsage   = 2 // bad command line
)

// usageError is a bad command line: the program prints it and exits with
// exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

const commands = `Usage:
  popularusers [run] [flags]   the popular-users pipeline (default)
  popularusers produce [flags] random events to a Kafka topic
  popularusers generate [flags] the original's static data set as CSV
  popularusers broker [flags]  an embedded Kafka broker, until stopped
  popularusers bench [flags]   throughput against a bare consumer and line count

Run "popularusers <command> -h" for the flags of a command.
`

// run is the program: it parses args, runs the command until it is done or
// ctx is cancelled, and returns the exit code. stdin is read with -input -;
// results go to stdout, logs and dead letters to stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Several goroutines write (the pipeline, the Kafka clients' loggers,
	// the built-in producer): one lock per stream keeps lines whole.
	stdout, stderr = &syncWriter{w: stdout}, &syncWriter{w: stderr}
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var (
		c   command
		err error
	)
	switch cmd {
	case "run":
		c, err = parseRun(args, stderr)
	case "produce":
		c, err = parseProduce(args, stderr)
	case "generate":
		c, err = parseGenerate(args, stderr)
	case "broker":
		c, err = parseBroker(args, stderr)
	case "bench":
		c, err = parseBench(args, stderr)
	case "help":
		fmt.Fprint(stdout, commands)
		return exitOK
	default:
		fmt.Fprintf(stderr, "popularusers: unknown command %q\n\n%s", cmd, commands)
		return exitUsage
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		var ue *usageError
		if errors.As(err, &ue) {
			// flag has printed its own errors with the usage; ours get a
			// pointer to it.
			fmt.Fprintf(stderr, "popularusers %s: %v\nRun \"popularusers %s -h\" for usage.\n", cmd, ue.msg, cmd)
		}
		return exitUsage
	}
	log := c.logging().logger(stderr)
	if err := c.run(ctx, log, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "popularusers %s: %v\n", cmd, err)
		return exitFailure
	}
	return exitOK
}

// command is a parsed, validated subcommand.
type command interface {
	run(ctx context.Context, log *slog.Logger, stdin io.Reader, stdout, stderr io.Writer) error
	logging() *logConfig
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: popularusers %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags adds the log flags to fs, parses args into it and rejects
// positional arguments. Errors from flag itself (already printed with the
// usage) come back as is; others are *usageError.
func parseFlags(fs *flag.FlagSet, args []string, log *logConfig) error {
	log.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlagPrinted
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q: flags come as -name value", fs.Arg(0))
	}
	return log.check()
}

// errFlagPrinted is a bad command line that package flag has already
// reported.
var errFlagPrinted = errors.New("bad flags")

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
