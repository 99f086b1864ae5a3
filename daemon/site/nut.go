package site

import "context"

// startNUT starts the NUT server when nut.listen is set; it returns the function that serves.
func (s *Site) startNUT(ctx context.Context) (func(), error) {
	return nil, nil
}
