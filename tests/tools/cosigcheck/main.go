// cosigcheck verifies the witness cosignatures on a checkpoint with
// torchwood's cosignature verifier (filippo.io/torchwood, the library
// litewitness is built on) and golang.org/x/mod/sumdb/note, independent of
// Amber's code.
//
// usage: cosigcheck NAME WITNESS_KEY_FILE < CHECKPOINT
//
// WITNESS_KEY_FILE is the witness's OpenSSH Ed25519 private key (the test
// made it); its cosignature verifier is derived from it by torchwood.
// Prints the cosignature's timestamp; exits 1 if the note carries no valid
// cosignature by that witness.
package main

import (
	"crypto"
	"fmt"
	"io"
	"os"

	"filippo.io/torchwood"
	"golang.org/x/crypto/ssh"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: cosigcheck NAME WITNESS_KEY_FILE < CHECKPOINT")
	}
	pem, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err.Error())
	}
	key, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		fail(err.Error())
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		fail("not a signing key")
	}
	cosigner, err := torchwood.NewCosignatureSigner(os.Args[1], signer)
	if err != nil {
		fail(err.Error())
	}
	text, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	n, err := note.Open(text, note.VerifierList(cosigner.Verifier()))
	if err != nil {
		fail("no valid cosignature: " + err.Error())
	}
	for _, sig := range n.Sigs {
		t, err := torchwood.CosignatureTimestamp(sig)
		if err != nil {
			fail(err.Error())
		}
		fmt.Println(t)
	}
}

func fail(why string) {
	fmt.Fprintln(os.Stderr, "cosigcheck:", why)
	os.Exit(1)
}
