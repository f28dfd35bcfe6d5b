package embed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/embedfleet/embedfleet/shared/objstore"
)

// SyncFilter lists what Sync reads from a source: the specs, ONNX files and
// a text model's tokenizer files (by the names export.py and pull give them).
var SyncFilter = objstore.Filter{Include: []string{SpecFile, "*.onnx", "vocab.json", "merges.txt"}}

// Sync copies every model under src (a folder per model with spec.json and
// the ONNX file it names, as in a models folder) into dir. Each ONNX file is
// checked against its spec's sha256 before it replaces anything; a model
// already in dir with the same version is left alone. It returns the specs
// it installed or found up to date. src should be opened with SyncFilter.
func Sync(ctx context.Context, src objstore.Source, dir string, maxBytes int64) ([]Spec, error) {
	var specKeys []string
	err := src.List(ctx, "", func(o objstore.Object) error {
		if path.Base(o.Key) == SpecFile {
			specKeys = append(specKeys, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(specKeys) == 0 {
		return nil, fmt.Errorf("%w: no %s under %s", ErrModelNotFound, SpecFile, src.URI())
	}
	var out []Spec
	for _, sk := range specKeys {
		raw, err := src.Get(ctx, sk, 1<<20)
		if err != nil {
			return out, err
		}
		var spec Spec
		if err := json.Unmarshal(raw, &spec); err != nil {
			return out, fmt.Errorf("%w: %s: %v", ErrInvalidSpec, src.ObjectURI(sk), err)
		}
		if spec.ONNX == "" {
			spec.ONNX = "model.onnx"
		}
		if err := spec.Validate(); err != nil {
			return out, fmt.Errorf("%s: %w", src.ObjectURI(sk), err)
		}
		if spec.Version == "" {
			return out, fmt.Errorf("%w: %s has no version (sha256) to check the download against", ErrInvalidSpec, src.ObjectURI(sk))
		}
		final := filepath.Join(dir, spec.Name)
		if have, err := LoadSpec(final); err == nil && have.Version == spec.Version {
			out = append(out, spec)
			continue
		}
		onnxKey := path.Join(path.Dir(sk), spec.ONNX)
		data, err := src.Get(ctx, onnxKey, maxBytes)
		if err != nil {
			return out, err
		}
		sum := sha256.Sum256(data)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != spec.Version {
			return out, fmt.Errorf("%w: %s has %s, its spec says %s", ErrModelMismatch, src.ObjectURI(onnxKey), got, spec.Version)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return out, err
		}
		tmp, err := os.MkdirTemp(dir, ".sync-"+spec.Name+"-")
		if err != nil {
			return out, err
		}
		err = os.WriteFile(filepath.Join(tmp, spec.ONNX), data, 0o644)
		if err == nil {
			err = os.WriteFile(filepath.Join(tmp, SpecFile), raw, 0o644)
		}
		if err == nil && spec.IsText() {
			err = syncTokenizer(ctx, src, path.Dir(sk), tmp, spec)
		}
		if err == nil {
			err = os.RemoveAll(final)
		}
		if err == nil {
			err = os.Rename(tmp, final)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return out, err
		}
		out = append(out, spec)
	}
	return out, nil
}

// syncTokenizer copies a text model's vocab and merges beside it, each
// checked against the sha256 its spec records. A model stored without them
// is copied without them: it then takes them from --tokenizer-dir.
func syncTokenizer(ctx context.Context, src objstore.Source, prefix, tmp string, spec Spec) error {
	t := spec.Tokenizer
	for _, f := range []struct{ name, sum string }{{t.Vocab, t.VocabSHA256}, {t.Merges, t.MergesSHA256}} {
		key := path.Join(prefix, f.name)
		data, err := src.Get(ctx, key, 64<<20)
		if errors.Is(err, objstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); f.sum != "" && got != f.sum {
			return fmt.Errorf("%w: %s has sha256 %s, its spec says %s", ErrModelMismatch, src.ObjectURI(key), got, f.sum)
		}
		if err := os.WriteFile(filepath.Join(tmp, f.name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
