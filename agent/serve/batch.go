package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// runBatched stacks the requests' inputs along dimension 0, runs them once
// and hands each request its rows of every output. It answers the requests
// only on success; on error the caller runs them one by one.
func (e *entry) runBatched(v *version, reqs []*request) error {
	total := 0
	for _, r := range reqs {
		for i, t := range r.inputs {
			first := reqs[0].inputs[i]
			if len(t.Shape) == 0 || !slices.Equal(t.Shape[1:], first.Shape[1:]) || t.Shape[0] != r.rows {
				return errMixedShapes
			}
		}
		total += r.rows
	}
	ins := make([]runtime.Tensor, len(v.inputs))
	for i := range v.inputs {
		first := reqs[0].inputs[i]
		shape := append([]int{total}, first.Shape[1:]...)
		data := make([]byte, 0, runtime.ByteSize(first.DType, shape))
		for _, r := range reqs {
			data = append(data, r.inputs[i].Data...)
		}
		ins[i] = runtime.Tensor{DType: first.DType, Shape: shape, Data: data}
	}
	sess, err := v.session()
	if err != nil {
		return err
	}
	outs := make([]runtime.Tensor, len(v.outputs))
	// Run until the last of the batch's deadlines; requests whose own
	// deadline passes meanwhile are answered as expired by finish.
	last := reqs[0].deadline
	for _, r := range reqs[1:] {
		if r.deadline.After(last) {
			last = r.deadline
		}
	}
	ctx, cancel := context.WithDeadline(e.s.runCtx, last)
	start := time.Now()
	err = sess.Run(ctx, ins, outs)
	d := time.Since(start)
	cancel()
	if err != nil && ctx.Err() == context.DeadlineExceeded && e.s.runCtx.Err() == nil {
		_ = sess.Close()
		return fmt.Errorf("batched run of %d requests: %w", len(reqs), context.DeadlineExceeded)
	}
	if err != nil {
		if errors.Is(err, runtime.ErrInput) {
			v.putSession(sess)
		} else {
			_ = sess.Close()
		}
		return fmt.Errorf("batched run of %d requests: %w", len(reqs), err)
	}
	v.putSession(sess)
	for _, o := range outs {
		if len(o.Shape) == 0 || o.Shape[0] != total || len(o.Data)%total != 0 {
			return fmt.Errorf("%w: output shape %v for a batch of %d", errBatchShape, o.Shape, total)
		}
	}
	e.learn(d, len(reqs))
	row := 0
	for _, r := range reqs {
		mine := make([]runtime.Tensor, len(outs))
		for j, o := range outs {
			per := len(o.Data) / total
			shape := append([]int{r.rows}, o.Shape[1:]...)
			mine[j] = runtime.Tensor{DType: o.DType, Shape: shape, Data: o.Data[row*per : (row+r.rows)*per : (row+r.rows)*per]}
		}
		row += r.rows
		e.finish(r, mine, nil, v.name, ran{outputs: v.outputs, start: start, compute: d, batch: len(reqs)})
	}
	return nil
}
