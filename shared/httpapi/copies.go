package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// CopiesResponse answers /v1/copies: the query's candidate copies, best
// first, each with its raw cosine, its score (normalised against the
// model's background set when it has one), its tier and the verdict; Copy
// says whether any of them is a copy.
type CopiesResponse struct {
	Model      string            `json:"model"`
	K          int               `json:"k"`
	Normalised bool              `json:"normalised"`
	Copy       bool              `json:"copy"`
	TookMS     float64           `json:"took_ms"`
	Matches    []copies.Match    `json:"matches"`
	Thresholds copies.Thresholds `json:"thresholds"`
}

func (s *Server) copiesImage(r *http.Request) (any, error) {
	start := time.Now()
	model, k, err := s.params(r)
	if err != nil {
		return nil, err
	}
	col, _, err := s.copies.Collections(r.Context(), model)
	if err != nil {
		return nil, err
	}
	enc, err := s.search.EncoderFor(model, col)
	if err != nil {
		return nil, err
	}
	v, sha, err := s.embedUpload(r, enc)
	if err != nil {
		return nil, err
	}
	return s.answerCopies(r, model, k, copies.Query{Vector: v, SHA256: sha}, start)
}

func (s *Server) copiesObject(r *http.Request) (any, error) {
	start := time.Now()
	model, k, err := s.params(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	uri, id := q.Get("uri"), q.Get("id")
	if (uri == "") == (id == "") {
		return nil, badRequest("uri or id is required (one of them): the indexed object to check (or POST an image)")
	}
	col, _, err := s.copies.Collections(r.Context(), model)
	if err != nil {
		return nil, err
	}
	what := id
	if uri != "" {
		id, what = vecstore.ID(uri), uri
	}
	row, found, err := col.Get(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("%s is not indexed in %s", clip(what), col.Name)}
	}
	return s.answerCopies(r, model, k, copies.Query{Vector: row.Vector, SHA256: row.SHA256, Self: row.ID}, start)
}

func (s *Server) answerCopies(r *http.Request, model string, k int, q copies.Query, start time.Time) (any, error) {
	prefix, err := prefixOf(r)
	if err != nil {
		return nil, err
	}
	ans, normalised, err := s.copies.CheckUnder(r.Context(), model, []copies.Query{q}, k, prefix)
	if errors.Is(err, copies.ErrBackgroundVersion) {
		return nil, &apiError{code: http.StatusConflict, msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	resp := CopiesResponse{Model: model, K: k, Normalised: normalised, TookMS: ms(time.Since(start)), Matches: ans[0],
		Thresholds: s.copies.ThresholdsFor(normalised)}
	for _, m := range ans[0] {
		resp.Copy = resp.Copy || m.IsCopy
	}
	return resp, nil
}

// clip makes a client's value fit an error message: clipped, escaped.
func clip(v string) string { return escape.Value(v) }
