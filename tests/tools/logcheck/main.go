// logcheck checks Amber's transparency log with Go's golang.org/x/mod/sumdb
// packages (note, tlog), code nobody at Amber wrote. It reads one JSON check
// a line on stdin and answers one JSON result a line on stdout:
//
//	{"op":"checkpoint","vkey":V,"note":N}
//	{"op":"inclusion","vkey":V,"note":N,"index":I,"entry":B64,"proof":[B64...]}
//	{"op":"consistency","vkey":V,"old":N1,"new":N2,"proof":[B64...]}
//	{"op":"receipt","vkey":V,"receipt":R}   (c2sp.org/tlog-proof@v1)
//
// answering {"ok":true,"size":S,"root":B64} or {"ok":false,"error":E}.
//
// Built in GOPATH mode from Debian's golang-golang-x-mod-dev, with no module
// download: GOPATH=/usr/share/gocode GO111MODULE=off go build.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type check struct {
	Op      string   `json:"op"`
	Vkey    string   `json:"vkey"`
	Note    string   `json:"note"`
	Old     string   `json:"old"`
	New     string   `json:"new"`
	Index   int64    `json:"index"`
	Entry   string   `json:"entry"`
	Proof   []string `json:"proof"`
	Receipt string   `json:"receipt"`
}

type result struct {
	Ok    bool   `json:"ok"`
	Size  int64  `json:"size,omitempty"`
	Root  string `json:"root,omitempty"`
	Error string `json:"error,omitempty"`
}

// openCheckpoint verifies a C2SP checkpoint: a note signed by the log key
// whose text is origin, size and base64 root (the origin must be the key's
// name).
func openCheckpoint(vkey, text string) (int64, tlog.Hash, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return 0, tlog.Hash{}, errors.New("checkpoint origin is not the key's name")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return 0, tlog.Hash{}, errors.New("malformed checkpoint size")
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	return size, root, nil
}

func hashes(lines []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, len(lines))
	for _, line := range lines {
		h, err := tlog.ParseHash(line)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func inclusion(vkey, cp string, index int64, entry []byte, proof []string) (int64, tlog.Hash, error) {
	size, root, err := openCheckpoint(vkey, cp)
	if err != nil {
		return 0, root, err
	}
	p, err := hashes(proof)
	if err != nil {
		return 0, root, err
	}
	if err := tlog.CheckRecord(p, size, root, index, tlog.RecordHash(entry)); err != nil {
		return 0, root, err
	}
	return size, root, nil
}

// receipt parses a c2sp.org/tlog-proof@v1 with the entry as its extra data.
func receipt(vkey, text string) (int64, tlog.Hash, error) {
	head, cp, ok := strings.Cut(text, "\n\n")
	if !ok {
		return 0, tlog.Hash{}, errors.New("no checkpoint in the receipt")
	}
	lines := strings.Split(head, "\n")
	if len(lines) < 3 || lines[0] != "c2sp.org/tlog-proof@v1" ||
		!strings.HasPrefix(lines[1], "extra ") || !strings.HasPrefix(lines[2], "index ") {
		return 0, tlog.Hash{}, errors.New("malformed receipt")
	}
	entry, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	return inclusion(vkey, cp, index, entry, lines[3:])
}

func run(c check) (int64, tlog.Hash, error) {
	switch c.Op {
	case "checkpoint":
		return openCheckpoint(c.Vkey, c.Note)
	case "inclusion":
		entry, err := base64.StdEncoding.DecodeString(c.Entry)
		if err != nil {
			return 0, tlog.Hash{}, err
		}
		return inclusion(c.Vkey, c.Note, c.Index, entry, c.Proof)
	case "consistency":
		oldSize, oldRoot, err := openCheckpoint(c.Vkey, c.Old)
		if err != nil {
			return 0, oldRoot, err
		}
		newSize, newRoot, err := openCheckpoint(c.Vkey, c.New)
		if err != nil {
			return 0, newRoot, err
		}
		p, err := hashes(c.Proof)
		if err != nil {
			return 0, newRoot, err
		}
		if oldSize == 0 {
			if len(p) != 0 {
				return 0, newRoot, errors.New("a proof from the empty tree must be empty")
			}
			return newSize, newRoot, nil
		}
		if err := tlog.CheckTree(p, newSize, newRoot, oldSize, oldRoot); err != nil {
			return 0, newRoot, err
		}
		return newSize, newRoot, nil
	case "receipt":
		return receipt(c.Vkey, c.Receipt)
	}
	return 0, tlog.Hash{}, fmt.Errorf("unknown op %q", c.Op)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c check
		var r result
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			r.Error = err.Error()
		} else if size, root, err := run(c); err != nil {
			r.Error = err.Error()
		} else {
			r = result{Ok: true, Size: size, Root: base64.StdEncoding.EncodeToString(root[:])}
		}
		if err := out.Encode(r); err != nil {
			os.Exit(1)
		}
	}
}
