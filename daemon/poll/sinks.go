package poll

import (
	"sync"
	"time"
)

// Results go through their sinks on a few goroutines shared by every running poller rather
// than on each poller's own. A sink is the deep part of a poll (a site's ingest runs the store,
// the rules, the policies and the metrics, and sometimes a database commit); a goroutine's
// stack grows to fit its deepest call and stays grown, so with a goroutine per device that
// part would cost every device a stack twice the size of its waiting loop (1,000 simulated
// devices: 8 MB of stacks instead of 4). A site serialises its ingest anyway, so a few sink
// goroutines lose no parallelism.
//
// A poller waits for its sink to return, as when it called it itself: results of one device
// stay in order and a slow sink slows its poller. When every shared goroutine is busy for
// longer than sinkWait (a sink stuck in a slow commit), the poller calls its sink itself, so
// no device waits for another's sink more than that.
const (
	sinkWorkers = 4
	sinkWait    = 100 * time.Millisecond
)

type sinkJob struct {
	sink Sink
	res  Result
	done chan<- struct{}
}

// sinks owns the shared goroutines: started by the first running poller, stopped (and waited
// for) by the last.
var sinks struct {
	mu    sync.Mutex
	users int
	jobs  chan sinkJob
	wg    sync.WaitGroup
}

// acquireSinks returns the channel of the shared sink goroutines and a release function for
// when the poller stops.
func acquireSinks() (chan<- sinkJob, func()) {
	sinks.mu.Lock()
	defer sinks.mu.Unlock()
	if sinks.users == 0 {
		jobs := make(chan sinkJob)
		sinks.jobs = jobs
		for range sinkWorkers {
			sinks.wg.Add(1)
			go func() {
				defer sinks.wg.Done()
				for j := range jobs {
					j.sink(j.res)
					j.done <- struct{}{}
				}
			}()
		}
	}
	sinks.users++
	jobs := sinks.jobs
	return jobs, func() {
		sinks.mu.Lock()
		defer sinks.mu.Unlock()
		sinks.users--
		if sinks.users == 0 {
			close(jobs)
			sinks.wg.Wait()
		}
	}
}

// deliverer hands one poller's results to the shared sink goroutines.
type deliverer struct {
	sink  Sink
	jobs  chan<- sinkJob
	done  chan struct{}
	timer *time.Timer
}

func newDeliverer(sink Sink, jobs chan<- sinkJob) *deliverer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &deliverer{sink: sink, jobs: jobs, done: make(chan struct{}), timer: t}
}

// deliver returns once the sink has taken res.
func (d *deliverer) deliver(res Result) {
	j := sinkJob{sink: d.sink, res: res, done: d.done}
	select {
	case d.jobs <- j:
		<-d.done
		return
	default:
	}
	d.timer.Reset(sinkWait)
	select {
	case d.jobs <- j:
		d.timer.Stop()
		<-d.done
	case <-d.timer.C:
		d.sink(res)
	}
}
