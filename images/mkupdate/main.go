// Command mkupdate builds a signed firmware update bundle (package internal/fwbundle) from a
// slot image written by mkimage:
//
//	mkupdate -slot images/out/slot.img -version v1.2 -key images/keys/dev.key \
//	         -o images/out/rackwatch-arm64-v1.2.update
//
// The epoch is SOURCE_DATE_EPOCH, the same one mkimage puts in the slot's firmware.json, so
// the daemon can refuse a bundle older than what it runs. With -key "" the bundle is written
// with manifest.json.minisig empty and manifest.json is also written next to the output, to
// be signed on an offline machine (`minisign -S -m manifest.json`) and put back with -resign.
// It is a build tool: it must not import the daemon.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
)

func main() {
	slot := flag.String("slot", "", "slot image (a whole FAT file system, mkimage -slot-out)")
	version := flag.String("version", "", "firmware version (the slot's VERSION)")
	board := flag.String("board", "rackwatch-arm64", "board the bundle is for")
	key := flag.String("key", "images/keys/dev.key", "unencrypted minisign secret key (minisign -G -W); empty: leave unsigned")
	resign := flag.String("resign", "", "bundle to copy with the signature in -sig instead of building one")
	sigFile := flag.String("sig", "", "minisign signature of the bundle's manifest.json (with -resign)")
	out := flag.String("o", "", "output bundle")
	flag.Parse()
	if *out == "" {
		log.Fatal("mkupdate: -o is required")
	}
	var err error
	if *resign != "" {
		err = resignBundle(*resign, *sigFile, *out)
	} else {
		if *slot == "" || *version == "" {
			log.Fatal("mkupdate: -slot and -version are required")
		}
		err = build(*slot, *version, *board, *key, *out)
	}
	if err != nil {
		log.Fatal("mkupdate: ", err)
	}
	fmt.Println(*out)
}

func epoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH is not set (the Makefile sets it)")
	}
	return strconv.ParseInt(s, 10, 64)
}

func build(slotPath, version, board, keyPath, out string) error {
	ep, err := epoch()
	if err != nil {
		return err
	}
	var sk *minisign.SecretKey
	if keyPath != "" {
		b, err := os.ReadFile(keyPath)
		if err != nil {
			return err
		}
		k, err := minisign.ParseSecretKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", keyPath, err)
		}
		sk = &k
	}
	raw, err := os.Open(slotPath)
	if err != nil {
		return err
	}
	defer raw.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriter(tmp)
	part, err := fwbundle.CompressPart(fwbundle.SlotPart, bufio.NewReader(raw), bw)
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	m := fwbundle.Manifest{Format: fwbundle.Format, Board: board, Version: version, Epoch: ep, Parts: []fwbundle.Part{part}}
	mb, err := fwbundle.EncodeManifest(m)
	if err != nil {
		return err
	}
	var sig []byte
	if sk != nil {
		if sig, err = fwbundle.SignManifest(*sk, mb); err != nil {
			return err
		}
	} else if err := os.WriteFile(out+".manifest.json", mb, 0o644); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return writeFile(out, func(w io.Writer) error {
		return fwbundle.Write(w, mb, sig, []io.Reader{bufio.NewReader(tmp)})
	})
}

// resignBundle copies a bundle with another signature of the same manifest.
func resignBundle(in, sigPath, out string) error {
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		return err
	}
	if _, err := minisign.ParseSignature(sig); err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	return writeFile(out, func(w io.Writer) error { return fwbundle.Resign(w, f, sig) })
}

func writeFile(out string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(out), ".update-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriter(f)
	if err := write(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}
