package dbst

import (
	"fmt"
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestStats(t *testing.T) {
	db, err := bolt.Open(os.Getenv("DB"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			fmt.Printf("%-24s keys=%5d depth=%d leaf=%d branch=%d inline=%d leafInuse=%d buckets=%d\n", name, s.KeyN, s.Depth, s.LeafPageN, s.BranchPageN, s.InlineBucketN, s.LeafInuse, s.BucketN)
			return nil
		})
	})
}
