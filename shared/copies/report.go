package copies

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
)

// WriteCSV writes one row per group member: group, tier, id, uri, score to
// the group's representative, cosine, member tier, representative.
func WriteCSV(w io.Writer, groups []Group) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"group", "group_tier", "id", "uri", "score", "cosine", "tier", "representative"})
	for _, g := range groups {
		for _, m := range g.Members {
			_ = cw.Write([]string{g.ID, string(g.Tier), m.ID, m.URI, strconv.FormatFloat(m.Score, 'f', 6, 64),
				strconv.FormatFloat(m.Cosine, 'f', 6, 64), string(m.Tier), strconv.FormatBool(m.Representative)})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSONL writes one JSON object per group member (Member's fields and
// the group's tier).
func WriteJSONL(w io.Writer, groups []Group) error {
	enc := json.NewEncoder(w)
	for _, g := range groups {
		for _, m := range g.Members {
			if err := enc.Encode(struct {
				Member
				GroupTier Tier `json:"group_tier"`
			}{m, g.Tier}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReportInfo heads the HTML report.
type ReportInfo struct {
	Model      string
	Collection string
	Scanned    int64
	Pairs      map[Tier]int
	Normalised bool
	HasHashes  bool
	Thresholds Thresholds
	Recipe     Recipe
	K          int
}

// WriteHTML writes a self-contained page of the groups, each member with a
// thumbnail (thumb reads and shrinks an object; nil or an error shows its
// URI alone), at most maxGroups groups per tier (0: all) and maxMembers
// members per group shown (0: all); the CSV and JSON Lines hold everything.
func WriteHTML(ctx context.Context, w io.Writer, info ReportInfo, groups []Group, maxGroups, maxMembers int,
	thumb func(ctx context.Context, uri string) ([]byte, error)) error {
	type cell struct {
		Member
		Img template.URL
		Err string
	}
	type grp struct {
		Group
		Cells  []cell
		Hidden int
	}
	type tierView struct {
		Tier   Tier
		Groups []grp
		Hidden int
	}
	var views []tierView
	shown := map[Tier]int{}
	for _, g := range groups {
		if len(views) == 0 || views[len(views)-1].Tier != g.Tier {
			views = append(views, tierView{Tier: g.Tier})
		}
		v := &views[len(views)-1]
		if maxGroups > 0 && shown[g.Tier] >= maxGroups {
			v.Hidden++
			continue
		}
		shown[g.Tier]++
		gv := grp{Group: g}
		for i, m := range g.Members {
			if maxMembers > 0 && i >= maxMembers {
				gv.Hidden = len(g.Members) - i
				break
			}
			c := cell{Member: m}
			if thumb != nil {
				if b, err := thumb(ctx, m.URI); err != nil {
					c.Err = err.Error()
				} else {
					// Only JPEG bytes made by imageprep.Thumbnail go here.
					c.Img = template.URL("data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(b)) //nolint:gosec
				}
			}
			gv.Cells = append(gv.Cells, c)
		}
		v.Groups = append(v.Groups, gv)
	}
	pairs := map[string]int{}
	for t, n := range info.Pairs {
		pairs[string(t)] = n
	}
	return reportPage.Execute(w, map[string]any{"Info": info, "Pairs": pairs, "Tiers": views})
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"f3": func(v float64) string { return fmt.Sprintf("%.3f", v) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embedfleet dedup: {{.Info.Model}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h2{margin-top:1.5em}.group{border:1px solid #ccc;border-radius:6px;padding:.5em;margin:.6em 0}
.members{display:flex;flex-wrap:wrap;gap:.5em}.m{width:170px;font-size:12px;word-break:break-all}
.m img{max-width:160px;max-height:160px;display:block;border:1px solid #ddd}
.rep img{border:3px solid #2a7}.err{color:#a22}.tier{font-weight:600}
</style></head><body>
<h1>Copies in {{.Info.Collection}} ({{.Info.Model}})</h1>
<p>{{.Info.Scanned}} vectors scanned, {{.Info.K}} nearest each.
Pairs: exact {{index .Pairs "exact"}}, copy {{index .Pairs "copy"}}, similar {{index .Pairs "similar"}}.
{{if .Info.Normalised}}Scores are normalised against the background set (beta {{.Info.Recipe.Beta}}, {{.Info.Recipe.N}} nearest);{{else}}No background set: scores are raw cosines;{{end}}
copy at score &ge; {{f3 .Info.Thresholds.Copy}}{{if gt .Info.Thresholds.Similar 0.0}}, similar at cosine &ge; {{f3 .Info.Thresholds.Similar}}{{end}}.
{{if not .Info.HasHashes}}<b>This collection predates content hashes: the exact tier is empty until it is made again.</b>{{end}}</p>
{{range .Tiers}}<h2>{{.Tier}} groups</h2>
{{range .Groups}}<div class="group"><div>{{.ID}}: {{len .Members}} images</div><div class="members">
{{range .Cells}}<div class="m{{if .Representative}} rep{{end}}">{{if .Img}}<img src="{{.Img}}" alt="">{{else}}<div class="err">no thumbnail{{if .Err}}: {{.Err}}{{end}}</div>{{end}}
<div>{{.URI}}</div><div><span class="tier">{{if .Representative}}representative{{else}}{{.Tier}}{{end}}</span>{{if not .Representative}} score {{f3 .Score}}, cos {{f3 .Cosine}}{{end}}</div></div>
{{end}}{{if .Hidden}}<div>and {{.Hidden}} more (in the CSV)</div>{{end}}</div></div>
{{end}}{{if .Hidden}}<p>{{.Hidden}} more {{.Tier}} groups are in the CSV and JSON Lines.</p>{{end}}
{{else}}<p>No copies found.</p>{{end}}
</body></html>
`))
