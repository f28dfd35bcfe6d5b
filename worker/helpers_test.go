package worker_test

import (
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

var imageprepLimits = imageprep.Limits{}

var pngHeader = testimages.PNGHeaderClaiming
