package coordinator

import (
	"fmt"
	"os"
	"sync"
)

// Journal keeps the jobs a run published, in a temporary file, so that
// Wait can publish again a job that vanished (a purged stream, a crashed
// NATS that lost an acknowledged message) without listing the source again.
// Memory holds only an offset per job. Safe for concurrent use.
type Journal struct {
	mu   sync.Mutex
	f    *os.File
	size int64
	at   map[int64][2]int64 // seq -> offset, length
}

// NewJournal creates a journal in the system's temporary folder.
func NewJournal() (*Journal, error) {
	f, err := os.CreateTemp("", "embedfleet-journal-*")
	if err != nil {
		return nil, err
	}
	return &Journal{f: f, at: map[int64][2]int64{}}, nil
}

func (j *Journal) add(seq int64, data []byte) error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.WriteAt(data, j.size); err != nil {
		return fmt.Errorf("coordinator: journal: %w", err)
	}
	j.at[seq] = [2]int64{j.size, int64(len(data))}
	j.size += int64(len(data))
	return nil
}

// get returns job seq as published, or false when it is not journaled
// (published by an earlier, interrupted coordinator).
func (j *Journal) get(seq int64) ([]byte, bool) {
	if j == nil {
		return nil, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	loc, ok := j.at[seq]
	if !ok {
		return nil, false
	}
	b := make([]byte, loc[1])
	if _, err := j.f.ReadAt(b, loc[0]); err != nil {
		return nil, false
	}
	return b, true
}

// Close removes the journal file.
func (j *Journal) Close() error {
	if j == nil {
		return nil
	}
	name := j.f.Name()
	j.f.Close()
	return os.Remove(name)
}
