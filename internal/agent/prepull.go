package agent

import (
	"context"
	"sync"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// puller pulls the images the server asks for ahead of a rollout, one pull
// per image at a time however often the request repeats.
type puller struct {
	rt Runtime

	wg       sync.WaitGroup // the pulls under way
	mu       sync.Mutex
	inflight map[string]bool
}

func newPuller(rt Runtime) *puller { return &puller{rt: rt, inflight: map[string]bool{}} }

// pull starts pulling every image not already being pulled and reports each
// result through send. The pulls end with ctx; wait waits for them.
func (p *puller) pull(ctx context.Context, images []string, send func(*agentproto.AgentMessage) error) {
	for _, img := range images {
		p.mu.Lock()
		busy := p.inflight[img]
		p.inflight[img] = true
		p.mu.Unlock()
		if busy {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() {
				p.mu.Lock()
				delete(p.inflight, img)
				p.mu.Unlock()
			}()
			res := &agentproto.ImagePull{Image: img}
			digest, err := p.rt.EnsureImage(ctx, img)
			if ctx.Err() != nil {
				return // the session ended; the server asks again on the next
			}
			res.Digest = digest
			if err != nil {
				res.Error = err.Error()
			}
			send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Pulled{Pulled: res}})
		}()
	}
}

// wait returns once every pull started has ended.
func (p *puller) wait() { p.wg.Wait() }
