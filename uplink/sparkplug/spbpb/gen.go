// Package spbpb is the Sparkplug B payload (org.eclipse.tahu.protobuf.Payload), generated
// from Eclipse Tahu's sparkplug_b.proto as vendored in third_party/tahu. Do not edit
// sparkplug_b.pb.go: change the generator's version in go.mod and run go generate.
package spbpb

// The .proto has no go_package option and stays unmodified: the import path is given with M.
//go:generate sh gen.sh
