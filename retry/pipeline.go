package retry

import (
	"context"

	"github.com/fusou-proxy/fusou-proxy/assets"
	"github.com/fusou-proxy/fusou-proxy/pending"
)

// PipelineDeliverer delivers through an assets.Pipeline: a retry pass uploads through the same
// path as live captures (SPEC §7).
type PipelineDeliverer struct{ Pipeline *assets.Pipeline }

// Deliver maps the pipeline's Delivery to an Outcome.
func (d PipelineDeliverer) Deliver(ctx context.Context, e pending.Entry, count bool) (Outcome, string) {
	deliver := d.Pipeline.Deliver
	if !count {
		deliver = d.Pipeline.DeliverEarly
	}
	r := deliver(ctx, e)
	switch {
	case r.Held, r.Cancelled:
		return Busy, r.Reason
	case r.Dropped:
		return Dropped, r.Reason
	}
	switch r.Class {
	case assets.Success:
		return Delivered, r.Reason
	case assets.Auth:
		return Unauthorized, r.Reason
	case assets.Transient:
		return Failed, r.Reason
	}
	return Rejected, r.Reason
}
