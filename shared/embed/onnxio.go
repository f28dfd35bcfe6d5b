package embed

import (
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"
)

// graphIO reads the declared inputs and outputs (names and shapes, -1 for a
// symbolic or unknown dimension) from an ONNX model's bytes, without
// building an ONNX Runtime session: Open builds exactly one. Field numbers
// are those of onnx.proto: ModelProto.graph 7; GraphProto.input 11 and
// .output 12; ValueInfoProto.name 1 and .type 2; TypeProto.tensor_type 1;
// TypeProto.Tensor.shape 2; TensorShapeProto.dim 1; Dimension.dim_value 1.
func graphIO(model []byte) (ins, outs []ort.InputOutputInfo, err error) {
	graph, err := field(model, 7)
	if err != nil {
		return nil, nil, fmt.Errorf("onnx model: %w", err)
	}
	if graph == nil {
		return nil, nil, errors.New("onnx model: no graph")
	}
	err = each(graph, func(num protowire.Number, v []byte) error {
		if num != 11 && num != 12 {
			return nil
		}
		info, err := valueInfo(v)
		if err != nil {
			return err
		}
		if num == 11 {
			ins = append(ins, info)
		} else {
			outs = append(outs, info)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("onnx graph: %w", err)
	}
	return ins, outs, nil
}

func valueInfo(b []byte) (ort.InputOutputInfo, error) {
	var info ort.InputOutputInfo
	var typ []byte
	err := each(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			info.Name = string(v)
		case 2:
			typ = v
		}
		return nil
	})
	if err != nil || typ == nil {
		return info, err
	}
	tensor, err := field(typ, 1)
	if err != nil || tensor == nil {
		return info, err
	}
	// TypeProto.Tensor.elem_type 1: onnx.proto's TensorProto.DataType,
	// whose numbers ONNX Runtime's element types share.
	if err := walk(tensor, nil, func(n protowire.Number, v uint64) {
		if n == 1 {
			info.DataType = ort.TensorElementDataType(v)
		}
	}); err != nil {
		return info, err
	}
	shape, err := field(tensor, 2)
	if err != nil || shape == nil {
		return info, err
	}
	info.Dimensions = ort.Shape{}
	err = each(shape, func(num protowire.Number, dim []byte) error {
		if num != 1 {
			return nil
		}
		d := int64(-1) // a dim_param, or nothing: symbolic
		err := walk(dim, nil, func(n protowire.Number, v uint64) {
			if n == 1 {
				d = int64(v)
			}
		})
		info.Dimensions = append(info.Dimensions, d)
		return err
	})
	return info, err
}

// each calls f with every length-delimited field of the message b,
// skipping the others.
func each(b []byte, f func(protowire.Number, []byte) error) error { return walk(b, f, nil) }

// walk calls onBytes with every length-delimited field and onVarint with
// every varint field of the message b (either may be nil), skipping the
// others.
func walk(b []byte, onBytes func(protowire.Number, []byte) error, onVarint func(protowire.Number, uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && onBytes != nil:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := onBytes(num, v); err != nil {
				return err
			}
			b = b[n:]
		case typ == protowire.VarintType && onVarint != nil:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			onVarint(num, v)
			b = b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

// field returns the last length-delimited field num of message b (nil if
// there is none).
func field(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := each(b, func(n protowire.Number, v []byte) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out, err
}

// graphOps returns the operator types of the nodes of the model's main
// graph (GraphProto.node 1, NodeProto.op_type 4).
func graphOps(model []byte) (map[string]bool, error) {
	graph, err := field(model, 7)
	if err != nil || graph == nil {
		return nil, fmt.Errorf("onnx model: no graph (%v)", err)
	}
	ops := map[string]bool{}
	err = each(graph, func(num protowire.Number, node []byte) error {
		if num != 1 {
			return nil
		}
		op, err := field(node, 4)
		if err == nil && op != nil {
			ops[string(op)] = true
		}
		return err
	})
	return ops, err
}

// quantizedOps are the operators of an int8 graph (ONNX Runtime's dynamic
// and static quantisation write them).
var quantizedOps = []string{"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "QuantizeLinear", "DequantizeLinear"}

// checkPrecision compares the spec's precision with the graph: int8 needs
// quantised operators, and a quantised graph must say int8.
func checkPrecision(spec Spec, model []byte) error {
	ops, err := graphOps(model)
	if err != nil {
		return nil // a graph this reader does not follow: ONNX Runtime judges it
	}
	var found []string
	for _, op := range quantizedOps {
		if ops[op] {
			found = append(found, op)
		}
	}
	switch {
	case spec.Precision == PrecisionInt8 && len(found) == 0:
		return fmt.Errorf("%w: %s: the spec says precision int8 but the graph has no quantised operators (%v)", ErrModelMismatch, spec.Name, quantizedOps)
	case spec.Precision != PrecisionInt8 && len(found) > 0:
		return fmt.Errorf("%w: %s: the graph is quantised (%v) but the spec says precision %q: say int8", ErrModelMismatch, spec.Name, found, spec.Precision)
	}
	return nil
}
