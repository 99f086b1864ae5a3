package uplink

import (
	"encoding/binary"

	"go.etcd.io/bbolt"
)

// Stopped is what a stopped uplink's database says of its seqs.
type Stopped struct {
	// LastIncident and LastTelemetry are the last seqs given (a clean stop sets the telemetry
	// sequence back to the last seq used, so reserved seqs are not counted).
	LastIncident, LastTelemetry uint64
	// QueuedTelemetry are the telemetry seqs still on disk, to be sent at the next start.
	QueuedTelemetry []uint64
}

// ReadStopped reads a stopped uplink's seqs from its database: a consumer that saw fewer,
// and finds the rest not queued either, lost them.
func ReadStopped(db *bbolt.DB) (Stopped, error) {
	var st Stopped
	err := db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketNames[kindIncident]); b != nil {
			st.LastIncident = b.Sequence()
		}
		if b := tx.Bucket(bucketNames[kindTelemetry]); b != nil {
			st.LastTelemetry = b.Sequence()
			return b.ForEach(func(k, _ []byte) error {
				if len(k) == 8 {
					st.QueuedTelemetry = append(st.QueuedTelemetry, binary.BigEndian.Uint64(k))
				}
				return nil
			})
		}
		return nil
	})
	return st, err
}
