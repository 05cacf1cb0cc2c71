// A small driver that times Go Porcupine on the same operations bench/checker.py checks.
//
// bench/checker.py builds it in a temporary directory against ../shared/porcupine (Go
// Porcupine's library files, never copied into this project) and feeds it one JSON file:
//
//	{"reps": 1, "timeout_s": 60, "cases": [{"name": "...", "model": "register"|"porcupine-kv",
//	  "ops": [[client, kind, key, a, b, output, unknown, call, return], ...]}]}
//
// kind: 0 read, 1 write, 2 cas, 4 append.  For "register", a, b and output are the JSON
// text of the values (so equal values are equal strings; cas outputs are "true"/"false");
// for "porcupine-kv" they are the strings themselves.  unknown is 1 when nobody saw the
// output; return is -1 for a pending op (it returns after every other op, as Porcupine's
// own etcd test places :info ops).  Only the check is timed, after parsing; one JSON
// line per case and rep: {"name", "rep", "verdict", "seconds"}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

type input struct {
	kind int
	key  string
	a, b string
}

type output struct {
	value   string
	unknown bool
}

const (
	read   = 0
	write  = 1
	cas    = 2
	apnd   = 4
)

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	var order []string
	for _, op := range history {
		k := op.Input.(input).key
		if _, seen := byKey[k]; !seen {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], op)
	}
	out := make([][]porcupine.Operation, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out
}

// registerModel: Porcupine's etcd test model (read / write / cas) per key, over JSON texts.
var registerModel = porcupine.Model{
	Partition: partition,
	Init:      func() interface{} { return "null" },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		st := state.(string)
		inp := in.(input)
		o := out.(output)
		switch inp.kind {
		case read:
			return o.unknown || o.value == st, st
		case write:
			return true, inp.a
		case cas:
			swapped := inp.a == st
			next := st
			if swapped {
				next = inp.b
			}
			if o.unknown {
				return true, next
			}
			return (o.value == "true") == swapped, next
		}
		panic(fmt.Sprintf("register model: kind %d", inp.kind))
	},
}

// kvModel: Porcupine's kv test model (get / put / append on strings, absent = "").
var kvModel = porcupine.Model{
	Partition: partition,
	Init:      func() interface{} { return "" },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		st := state.(string)
		inp := in.(input)
		o := out.(output)
		switch inp.kind {
		case read:
			return o.unknown || o.value == st, st
		case write:
			return true, inp.a
		case apnd:
			return true, st + inp.a
		}
		panic(fmt.Sprintf("kv model: kind %d", inp.kind))
	},
}

type rawCase struct {
	Name  string              `json:"name"`
	Model string              `json:"model"`
	Ops   [][]json.RawMessage `json:"ops"`
}

type spec struct {
	Reps     int       `json:"reps"`
	TimeoutS float64   `json:"timeout_s"`
	Cases    []rawCase `json:"cases"`
}

func str(raw json.RawMessage) string {
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil {
		panic(err)
	}
	if s == nil {
		return ""
	}
	return *s
}

func num(raw json.RawMessage) int64 {
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		panic(err)
	}
	return n
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: driver SPEC.json")
		os.Exit(254)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var s spec
	if err := json.Unmarshal(data, &s); err != nil {
		panic(err)
	}
	type parsed struct {
		name  string
		model porcupine.Model
		ops   []porcupine.Operation
	}
	var cases []parsed
	for _, c := range s.Cases {
		ops := make([]porcupine.Operation, 0, len(c.Ops))
		var last int64
		for _, r := range c.Ops {
			if t := num(r[8]); t > last {
				last = t
			}
			if t := num(r[7]); t > last {
				last = t
			}
		}
		for _, r := range c.Ops {
			ret := num(r[8])
			if ret < 0 {
				last++
				ret = last
			}
			ops = append(ops, porcupine.Operation{
				ClientId: int(num(r[0])),
				Input:    input{kind: int(num(r[1])), key: str(r[2]), a: str(r[3]), b: str(r[4])},
				Output:   output{value: str(r[5]), unknown: num(r[6]) != 0},
				Call:     num(r[7]),
				Return:   ret,
			})
		}
		m := registerModel
		if c.Model == "porcupine-kv" {
			m = kvModel
		}
		cases = append(cases, parsed{c.Name, m, ops})
	}
	timeout := time.Duration(s.TimeoutS * float64(time.Second))
	enc := json.NewEncoder(os.Stdout)
	for rep := 0; rep < s.Reps; rep++ {
		for _, c := range cases {
			started := time.Now()
			result := porcupine.CheckOperationsTimeout(c.model, c.ops, timeout)
			elapsed := time.Since(started).Seconds()
			verdict := map[porcupine.CheckResult]string{porcupine.Ok: "ok", porcupine.Illegal: "illegal",
				porcupine.Unknown: "unknown"}[result]
			enc.Encode(map[string]interface{}{"name": c.name, "rep": rep, "verdict": verdict, "seconds": elapsed})
		}
	}
}
