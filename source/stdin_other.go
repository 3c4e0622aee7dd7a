//go:build !unix

package source

import (
	"errors"
	"os"
)

func pollableDup(uintptr, string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}
