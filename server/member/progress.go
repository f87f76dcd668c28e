package member

import "time"

// progressLoop tells idle watchers that asked for progress notifications
// the current revision, every interval.
func (m *Member) progressLoop(interval time.Duration) {
	defer m.done.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.eng.NotifyProgress()
		case <-m.stopping:
			return
		}
	}
}
