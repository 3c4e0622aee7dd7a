package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
)

// logConfig is how a command logs: -log-level and -log-format, taken by
// every command. Logs go to standard error; results to standard output.
type logConfig struct {
	level  slog.Level
	format string
}

func (l *logConfig) flags(fs *flag.FlagSet) {
	l.level = slog.LevelInfo
	fs.Var(levelFlag{&l.level}, "log-level", "log `level`: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log `format`: text (key=value) or json (one object per line)")
}

// levelFlag is a slog.Level as a flag, named in lower case as the flag's
// usage names the levels.
type levelFlag struct{ l *slog.Level }

func (f levelFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strings.ToLower(f.l.String())
}

func (f levelFlag) Set(s string) error { return f.l.UnmarshalText([]byte(s)) }

func (l *logConfig) check() error {
	if l.format != "text" && l.format != "json" {
		return usagef("-log-format %q: must be text or json", l.format)
	}
	return nil
}

// logging returns the configuration, for run.
func (l *logConfig) logging() *logConfig { return l }

// logger returns the logger to w that the flags describe.
func (l *logConfig) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.level}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// quieter returns log, less its records below min: the Kafka clients' and
// broker's own logs only when something is wrong, in the run's format.
func quieter(log *slog.Logger, min slog.Level) *slog.Logger {
	return slog.New(&levelHandler{log.Handler(), min})
}

// levelHandler drops the records of h below min.
type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h *levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelHandler{h.Handler.WithAttrs(attrs), h.min}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{h.Handler.WithGroup(name), h.min}
}
