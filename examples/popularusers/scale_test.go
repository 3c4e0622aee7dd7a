package main

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// changedRe finds the partition changes a process logs.
var changedRe = regexp.MustCompile(`msg="partitions changed" lost="?\[([\d ]*)\]"? gained="?\[([\d ]*)\]`)

// assigned returns the partitions p owns, as its log of partition
// changes tells.
func assigned(p *process) map[int]bool {
	own := map[int]bool{}
	for _, m := range changedRe.FindAllStringSubmatch(p.stderr.String(), -1) {
		for _, f := range strings.Fields(m[1]) {
			n, _ := strconv.Atoi(f)
			delete(own, n)
		}
		for _, f := range strings.Fields(m[2]) {
			n, _ := strconv.Atoi(f)
			own[n] = true
		}
	}
	return own
}

// waitShared waits until each process owns a partition and every
// partition of the input has one owner, and returns who owns which.
func waitShared(t *testing.T, ps []*process) map[int]int {
	t.Helper()
	owner := map[int]int{}
	waitFor(t, 2*time.Minute, fmt.Sprintf("the %d processes to share the partitions", len(ps)), func() bool {
		clear(owner)
		for i, p := range ps {
			own := assigned(p)
			if len(own) == 0 {
				return false
			}
			for part := range own {
				if _, dup := owner[part]; dup {
					return false
				}
				owner[part] = i
			}
		}
		return len(owner) == 4
	})
	return owner
}

// lastLines returns the last -json line of each process.
func lastLines(t *testing.T, ps []*process) []batchLine {
	out := make([]batchLine, len(ps))
	for i, p := range ps {
		lines := parseLines(t, strings.Join(p.stdout.lines(), "\n"))
		if len(lines) > 0 {
			out[i] = lines[len(lines)-1]
		}
	}
	return out
}

// idle reports whether each process's last n batches read nothing.
func idle(t *testing.T, ps []*process, n int) bool {
	for _, p := range ps {
		lines := parseLines(t, strings.Join(p.stdout.lines(), "\n"))
		if len(lines) < n {
			return false
		}
		for _, l := range lines[len(lines)-n:] {
			if l.Records != 0 {
				return false
			}
		}
	}
	return true
}

// answer is what a group of processes says of the last batch: the
// threshold, the users in state, and the popular users with their scores.
type answer struct {
	threshold float64
	users     int
	popular   map[int64]int64
}

// groupAnswer puts together the last lines of a group's processes: one
// threshold, the sum of the users and the union of the popular users. It
// fails when the processes do not agree on the threshold, or name a
// popular user twice.
func groupAnswer(lines []batchLine) (answer, error) {
	a := answer{popular: map[int64]int64{}}
	for i, l := range lines {
		if l.Threshold == nil {
			return a, fmt.Errorf("process %d: no threshold", i)
		}
		if i == 0 {
			a.threshold = *l.Threshold
		} else if *l.Threshold != a.threshold {
			return a, fmt.Errorf("process %d: threshold %v, process 0: %v", i, *l.Threshold, a.threshold)
		}
		a.users += l.Users
		for _, u := range popularOf(l) {
			if _, dup := a.popular[u.user]; dup {
				return a, fmt.Errorf("user %d is popular in two processes", u.user)
			}
			a.popular[u.user] = u.score
		}
	}
	return a, nil
}

// scaleCompression is the t-digest compression of the scale tests.
const scaleCompression = 20

// scaleRun is a test of one process (the reference) and three processes
// sharing the threshold, on the same input: every event of users
// 1000..1400, produced after the processes share the partitions.
type scaleRun struct {
	t      *testing.T
	sketch string
	addr   string
	one    *process
	three  []*process
	want   map[int64]int64
	events int
}

func startScaleRun(t *testing.T, sketch string) *scaleRun {
	t.Helper()
	if testing.Short() {
		t.Skip("runs processes")
	}
	r := &scaleRun{t: t, sketch: sketch, addr: startStandaloneBroker(t)}
	common := []string{"-brokers", r.addr, "-json", "-interval", "200ms", "-batch-records", "2000", "-sketch", sketch, "-state", "changelog"}
	if sketch == "tdigest" {
		// Fewer centroids than users: the digests do estimate.
		common = append(common, "-compression", strconv.Itoa(scaleCompression))
	}
	r.one = start(t, append(common, "-group", "one")...)
	for range 3 {
		r.three = append(r.three, start(t, append(common, "-group", "three", "-digest-topic", "three-digests")...))
	}
	waitShared(t, r.three)
	waitShared(t, []*process{r.one})
	r.events = 24_000
	return r
}

// produce starts writing the run's events, of users 1000..1400, at rate,
// and returns the produce command's result channel.
func (r *scaleRun) produce(seed, rate int64) <-chan result {
	done, want := produceEvents(r.t, r.addr, seed, 1000, 400, int64(r.events), rate)
	r.want = want
	return done
}

// check waits until every process has read everything and the processes
// of the three agree, then compares their answer with the one process's,
// and the totals of both groups' changelogs with the exact totals. With
// the exact sketch the answers are identical; with the t-digest, each
// threshold is within the digest package's bound of the exact quantile,
// and each group's popular users are exactly those above its threshold.
func (r *scaleRun) check(three []*process) {
	t := r.t
	t.Helper()
	var got, ref answer
	waitFor(t, 2*time.Minute, "every process idle, the three agreeing with the one", func() bool {
		if !idle(t, append([]*process{r.one}, three...), 5) {
			return false
		}
		var err error
		if ref, err = groupAnswer(lastLines(t, []*process{r.one})); err != nil || ref.users != len(r.want) {
			return false
		}
		got, err = groupAnswer(lastLines(t, three))
		return err == nil && got.users == len(r.want) && (got.threshold == ref.threshold || r.sketch != "exact")
	})
	assert.Equal(t, ref.users, got.users, "the processes' users add up to the one's")
	require.NotEmpty(t, ref.popular)
	if r.sketch == "exact" {
		assert.Equal(t, ref.threshold, got.threshold, "the group's threshold is the one process's")
		assert.Equal(t, ref.popular, got.popular, "and their popular users make up the one's")
	} else {
		exact := &reference{totals: r.want}
		bound := tdigestBound(0.95, scaleCompression, len(r.want))
		for name, a := range map[string]answer{"one": ref, "three": got} {
			assert.LessOrEqual(t, exact.rankError(a.threshold, 0.95), bound, "%s: threshold %v", name, a.threshold)
			above := map[int64]int64{}
			for _, u := range exact.above(a.threshold) {
				above[u.user] = u.score
			}
			assert.Equal(t, above, a.popular, "%s: the popular users are those above its threshold", name)
		}
	}
	t.Logf("%s: threshold %v (one process: %v), %d users, %d popular", r.sketch, got.threshold, ref.threshold, got.users, len(got.popular))

	for _, group := range []string{"one", "three"} {
		totals, read := changelogged(t, r.addr, group+"-totals-changelog", nil)
		assert.Equal(t, int64(r.events), read, "group %s: every event is in the state", group)
		assert.Equal(t, r.want, totals, "group %s: every user's total is exact", group)
	}
}

// Three processes in one group, sharing their partials through the digest
// topic, give the answer one process gives on the same input: with the
// exact sketch the same threshold, and between them the same popular users
// and totals; with the t-digest, a threshold within its bound.
func TestScaleOutMatchesOneProcess(t *testing.T) {
	for i, sketch := range []string{"exact", "tdigest"} {
		t.Run(sketch, func(t *testing.T) {
			seed := int64(21 + i)
			r := startScaleRun(t, sketch)
			res := <-r.produce(seed, 8000)
			require.Equal(t, exitOK, res.code, res.stderr)
			r.check(r.three)
			for i, p := range r.three {
				assert.Contains(t, p.stderr.String(), "sharing the threshold through the digest topic", "process %d", i)
				assert.NotContains(t, p.stderr.String(), "level=ERROR", "process %d", i)
			}
		})
	}
}

// One of the three killed with SIGKILL while events flow: the other two
// take over its partitions, restore their totals from the changelog and
// publish their partials in place of its stale ones; the answer is still
// the one process's, and no event is lost or counted twice.
func TestScaleOutSurvivesAKilledProcess(t *testing.T) {
	const seed = 23
	r := startScaleRun(t, "exact")
	owner := waitShared(t, r.three)
	produced := r.produce(seed, 4000) // about 6s of events
	// The victim owns a partition and is counting it.
	victim := owner[0]
	waitFor(t, time.Minute, "the victim counting", func() bool { return recordsOf(t, r.three[victim]) > 2000 })
	r.three[victim].kill(t)
	t.Logf("killed process %d, owner of partitions %v, after %d events", victim,
		slices.Sorted(maps.Keys(filterOwner(owner, victim))), recordsOf(t, r.three[victim]))
	survivors := slices.Delete(slices.Clone(r.three), victim, victim+1)
	res := <-produced
	require.Equal(t, exitOK, res.code, res.stderr)

	owners := waitShared(t, survivors)
	assert.Len(t, owners, 4, "the survivors own every partition")
	r.check(survivors)
	restored := 0
	for _, p := range survivors {
		restored += strings.Count(p.stderr.String(), `msg="changelog restored"`)
	}
	assert.GreaterOrEqual(t, restored, 3, "each survivor restored at its start, and the victim's partitions after the kill")
}

// filterOwner returns the partitions of owner's map that process i owns.
func filterOwner(owner map[int]int, i int) map[int]bool {
	out := map[int]bool{}
	for part, o := range owner {
		if o == i {
			out[part] = true
		}
	}
	return out
}

// Two processes of one group with another -sketch each (as while a group
// is restarted with the other one) on one digest topic: each leaves out
// the other's partials, with a warning, and goes on with its own batches
// instead of failing them.
func TestScaleOutWithTwoSketchesLeavesOutTheOthersPartials(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	addr := startStandaloneBroker(t)
	common := []string{"-brokers", addr, "-json", "-interval", "200ms", "-state", "changelog", "-group", "mixed", "-digest-topic", "mixed-digests"}
	ps := []*process{start(t, append(common, "-sketch", "tdigest")...), start(t, append(common, "-sketch", "exact")...)}
	waitShared(t, ps)
	const warning = `msg="exchange partial of another kind or input left out until its owner publishes one of this exchange's"`
	waitFor(t, time.Minute, "each process to leave out the other's partials", func() bool {
		for _, p := range ps {
			if !strings.Contains(p.stderr.String(), warning) {
				return false
			}
		}
		return true
	})
	seen := []int{len(ps[0].stdout.lines()), len(ps[1].stdout.lines())}
	waitFor(t, time.Minute, "five batches more of each process", func() bool {
		return len(ps[0].stdout.lines()) >= seen[0]+5 && len(ps[1].stdout.lines()) >= seen[1]+5
	})
	for i, p := range ps {
		assert.Equal(t, exitOK, p.stop(t, syscall.SIGTERM, 30*time.Second), "process %d", i)
		assert.NotContains(t, p.stderr.String(), "level=ERROR", "process %d", i)
	}
}
