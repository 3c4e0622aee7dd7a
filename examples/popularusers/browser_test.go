package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// chromium returns the path of a Chromium to drive headless. Without one
// the test skips, except under CI=true, where .ci/run installs it and a
// missing browser is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH, and CI=true: .ci/run installs Debian's chromium")
	}
	t.Skip("no chromium on PATH: install it (Debian: apt-get install chromium) to test the live page in a browser")
	return ""
}

// headless runs the browser on url with args, and returns its standard
// output. The virtual time budget lets the page's script run its polls
// and draw before the DOM is dumped or the screenshot taken.
func headless(t *testing.T, browser, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args = append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir(), "--window-size=1280,900",
		"--virtual-time-budget=5000",
	}, append(args, url)...)
	cmd := exec.CommandContext(ctx, browser, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s: %s", browser, stderr.String())
	return out
}

// pageFilled reads a DOM dump of the live page: the batches it charts, the
// points each chart drew, and the users its table lists.
func pageFilled(dom []byte) (batches, ratePoints, timePoints, users int) {
	atoi := func(re string) int {
		m := regexp.MustCompile(re).FindSubmatch(dom)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return atoi(`<body data-batches="(\d+)"`), atoi(`id="rate-chart" data-points="(\d+)"`),
		atoi(`id="time-chart" data-points="(\d+)"`), len(regexp.MustCompile(`<tr class="user">`).FindAll(dom, -1))
}

// The live page, in a real (headless) browser during a run of the
// README's first command: its charts and its top-users table fill in, and
// its screenshot, kept as a test artifact, shows the charts drawn.
func TestLivePageInABrowser(t *testing.T) {
	browser := chromium(t)
	_, stderr, stop := runInBackground(t, "-listen", "127.0.0.1:0", "-interval", "500ms", "-rate", "2000", "-metrics-addr", "127.0.0.1:0")
	url := monitorURL(t, stderr)
	// Ten batches of 500 ms: the charts' lines run across half of their
	// shortest span (10 s), far longer than their legends' swatches.
	waitFor(t, time.Minute, "ten batches with popular users", func() bool {
		var st status
		return json.Unmarshal(get(t, url+"status"), &st) == nil && len(st.Batches) >= 10 && len(st.Top) > 0
	})

	var batches, ratePoints, timePoints, users int
	waitFor(t, 3*time.Minute, "the page's charts and table to fill", func() bool {
		batches, ratePoints, timePoints, users = pageFilled(headless(t, browser, url, "--dump-dom"))
		return batches >= 10 && ratePoints >= 9 && timePoints >= 20 && users > 0
	})
	assert.LessOrEqual(t, users, topShown)

	dir := t.ArtifactDir()
	shot := filepath.Join(dir, "live-page.png")
	headless(t, browser, url, "--screenshot="+shot)
	t.Logf("screenshot of the live page: %s", shot)
	f, err := os.Open(shot)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 1280, 900), img.Bounds())
	// The charts' lines are drawn in their own colours: the page drew
	// data, not just its frame and legends (30 pixels of each colour; a
	// line over 4.5 s of a 10 s chart covers 250 or more).
	for name, c := range map[string]color.RGBA{"input rate": {0x2f, 0x6f, 0xde, 0xff}, "processing time": {0xd9, 0x82, 0x2b, 0xff}} {
		n := pixelsNear(img, c)
		t.Logf("%s: %d pixels of its colour", name, n)
		assert.Greater(t, n, 100, "%s line in the screenshot", name)
	}
	res := stop()
	require.Equal(t, exitOK, res.code)
}

// pixelsNear counts the pixels of img close to c (antialiasing blends
// the lines' edges).
func pixelsNear(img image.Image, c color.RGBA) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r>>8, c.R) && near(g>>8, c.G) && near(bl>>8, c.B) {
				n++
			}
		}
	}
	return n
}

func near(v uint32, want uint8) bool {
	d := int(v) - int(want)
	return d > -24 && d < 24
}

// Before the first batch, while the state is restored at start, the page
// says so: /status gives empty lists, not null, and the page's script
// draws them instead of failing ("disconnected").
func TestLivePageBeforeTheFirstBatch(t *testing.T) {
	m, err := startMonitor("127.0.0.1:0", 0.9, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer m.close()
	m.RestoreProgress(stream.RestoreStats{Entries: 12345})
	body := string(get(t, "http://"+m.addr+"/status"))
	assert.Contains(t, body, `"batches":[]`)
	assert.Contains(t, body, `"top":[]`)
	assert.Contains(t, body, `"quantile":0.9`, "the quantile of -limit, not 0")

	dom := headless(t, chromium(t), "http://"+m.addr+"/", "--dump-dom")
	conn := regexp.MustCompile(`id="conn"[^>]*>([^<]*)<`).FindSubmatch(dom)
	require.NotNil(t, conn, "the page's status line")
	assert.Contains(t, string(conn[1]), "restoring state")
}
