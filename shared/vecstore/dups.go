package vecstore

import (
	"context"
	"fmt"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// Rows that share an id.
//
// Milvus can hold two rows under one primary key: concurrent upserts of the
// same ids leave copies (milvus-lite 2.5.1 does, and the upstream issues of
// count(*) running above the rows upserted describe the same class:
// milvus-io/milvus#27515, #32425, #40396). At-least-once delivery makes such
// upserts possible here: a job redelivered while the first delivery's
// upsert is still being applied is embedded and upserted again at the same
// time. Queries, lookups, iterators and searches answer one row per id, so
// the copies are seen only by count(*), which counts each one; a single
// upsert or delete of the id afterwards removes them all. Verify finds the
// ids by counting and Rewrite removes the copies.

// countChunk is how many ids one count(*) names.
const countChunk = 2048

// CountIDs is the number of rows stored under ids, copies included
// (strongly consistent). Strings that are not ids have no row and are not
// sent.
func (c *Collection) CountIDs(ctx context.Context, ids []string) (int64, error) {
	valid := validIDs(ids)
	if len(valid) == 0 {
		return 0, nil
	}
	expr, err := idsFilter(valid)
	if err != nil {
		return 0, err
	}
	return c.count(ctx, expr)
}

// CountUnder is the number of rows whose URI starts with prefix, copies
// included, and maybe a few rows more when prefix holds a character that
// LIKE treats specially (see prefixPattern).
func (c *Collection) CountUnder(ctx context.Context, prefix string) (int64, error) {
	return c.count(ctx, uriPrefixFilter(prefix))
}

func (c *Collection) count(ctx context.Context, expr string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	rs, err := c.s.c.Query(ctx, milvusclient.NewQueryOption(c.Name).WithFilter(expr).
		WithOutputFields("count(*)").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		return 0, c.s.wrap("count in "+c.Name, err)
	}
	return rs.GetColumn("count(*)").GetAsInt64(0)
}

// Duplicated returns those of ids (distinct, valid) that have more than one
// row, in the order given. It counts the rows of ids a chunk at a time and
// halves only the chunks that count more rows than ids, so a clean
// collection costs one count per 2,048 ids.
func (c *Collection) Duplicated(ctx context.Context, ids []string) ([]string, error) {
	var out []string
	var walk func(part []string) error
	walk = func(part []string) error {
		n, err := c.CountIDs(ctx, part)
		if err != nil {
			return err
		}
		if n <= int64(len(part)) {
			return nil
		}
		if len(part) == 1 {
			out = append(out, part[0])
			return nil
		}
		if err := walk(part[:len(part)/2]); err != nil {
			return err
		}
		return walk(part[len(part)/2:])
	}
	for first := 0; first < len(ids); first += countChunk {
		if err := walk(ids[first:min(first+countChunk, len(ids))]); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Rewrite writes the rows of ids back as they are (vector, metadata, model
// version and time of writing unchanged), one upsert per 1,000 rows: the
// copies of a duplicated id collapse into the one row a query reads. It
// returns how many rows it wrote; ids without a row are skipped.
func (c *Collection) Rewrite(ctx context.Context, ids []string) (int, error) {
	valid := validIDs(ids)
	done := 0
	fields := append(c.rowFields(), FieldModelVersion, FieldIndexedAt)
	for first := 0; first < len(valid); first += 1000 {
		expr, err := idsFilter(valid[first:min(first+1000, len(valid))])
		if err != nil {
			return done, err
		}
		qctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
		rs, err := c.s.c.Query(qctx, milvusclient.NewQueryOption(c.Name).WithFilter(expr).
			WithOutputFields(fields...).WithConsistencyLevel(entity.ClStrong))
		cancel()
		if err != nil {
			return done, c.s.wrap("read for rewrite from "+c.Name, err)
		}
		rows, err := c.readRows(rs)
		if err != nil {
			return done, err
		}
		vc, ac := rs.GetColumn(FieldModelVersion), rs.GetColumn(FieldIndexedAt)
		if vc == nil || ac == nil {
			return done, fmt.Errorf("vecstore: %s: a query answered without the fields it asked for", c.Name)
		}
		stamps := make([]written, len(rows))
		for i := range rows {
			stamps[i].version, _ = vc.GetAsString(i)
			stamps[i].at, _ = ac.GetAsInt64(i)
		}
		if err := c.write(ctx, rows, stamps); err != nil {
			return done, err
		}
		done += len(rows)
	}
	return done, nil
}
