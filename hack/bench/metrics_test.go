package main

import (
	"math"
	"testing"
)

func histogram(name string, counts map[string]float64, extra map[string]string) metrics {
	var m metrics
	for le, v := range counts {
		labels := map[string]string{"le": le}
		for k, x := range extra {
			labels[k] = x
		}
		m = append(m, sample{name: name + "_bucket", labels: labels, value: v})
	}
	return m
}

func TestHistogramQuantile(t *testing.T) {
	ok := map[string]string{"result": "ok"}
	before := histogram("h", map[string]float64{"0.01": 10, "0.02": 10, "0.05": 10, "+Inf": 10}, ok)
	// 100 new observations: 20 up to 10 ms, 60 in (10, 20] ms, 20 in (20, 50] ms.
	after := histogram("h", map[string]float64{"0.01": 30, "0.02": 90, "0.05": 110, "+Inf": 110}, ok)
	// Another series that the match leaves out.
	after = append(after, histogram("h", map[string]float64{"0.01": 1000, "+Inf": 1000}, map[string]string{"result": "conflict"})...)
	for _, tt := range []struct{ q, want float64 }{
		{0.5, 0.015}, // rank 50: 30 of the 60 in (10, 20] ms
		{0.2, 0.01},  // the top of the first bucket
		{0.9, 0.035}, // rank 90: half of the 20 in (20, 50] ms
		{0.1, 0.005}, // half of the first bucket, from 0
	} {
		got := histogramQuantile(before, after, "h", label("result", "ok"), tt.q)
		if math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("q=%v: got %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := histogramQuantile(before, before, "h", label("result", "ok"), 0.5); !math.IsNaN(got) {
		t.Errorf("no observations: got %v, want NaN", got)
	}
}
