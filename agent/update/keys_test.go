package update_test

import (
	"crypto/ed25519"
	"testing"
)

func ed25519GenerateKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, key, nil
}
