package stream

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// nonFiniteMark starts JSONCodec's encoding of a value holding floats
// that JSON has no number for. No JSON text starts with it, so the
// encodings of all other values, json.Marshal's, read as they always did.
const nonFiniteMark = '!'

// nonFiniteJSON follows nonFiniteMark: the value with its non-finite
// floats set to 0, and those floats ("NaN", "+Inf", "-Inf") by their
// place among the floats of the value, counted as eachFloat visits them.
type nonFiniteJSON struct {
	Value  json.RawMessage `json:"value"`
	Floats map[int]string  `json:"floats"`
}

// isNonFinite reports whether s is how json.UnsupportedValueError names
// a float that JSON has no number for.
func isNonFinite(s string) bool { return s == "NaN" || s == "+Inf" || s == "-Inf" }

// appendNonFinite appends the encoding of v, which holds a NaN or an
// infinity, as nonFiniteMark and a nonFiniteJSON. v is not changed: the
// floats are set to 0 in a copy.
func appendNonFinite[T any](dst []byte, v T) ([]byte, error) {
	c := reflect.New(reflect.TypeFor[T]()).Elem()
	c.Set(reflect.ValueOf(&v).Elem())
	floats := map[int]string{}
	n := 0 // floats of v
	err := eachFloat(c, func(i int, f reflect.Value) error {
		n = i + 1
		if x := f.Float(); math.IsNaN(x) || math.IsInf(x, 0) {
			floats[i] = strconv.FormatFloat(x, 'g', -1, 64)
			f.SetFloat(0)
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	value, err := json.Marshal(c.Interface())
	if err != nil {
		return dst, err
	}
	b, err := json.Marshal(nonFiniteJSON{Value: value, Floats: floats})
	if err != nil {
		return dst, err
	}
	// JSON may leave out what holds floats: an embedded pointer whose
	// fields are all omitted is decoded nil. The floats after it would be
	// counted from another place, and given back in other fields; such a
	// value is refused instead.
	b = append([]byte{nonFiniteMark}, b...)
	var got T
	if err := decodeNonFinite(b, &got); err != nil {
		return dst, fmt.Errorf("stream: codec: the NaNs and infinities of %T would not be given back: %w", v, err)
	}
	m := 0
	err = eachFloat(reflect.ValueOf(&got).Elem(), func(i int, _ reflect.Value) error { m = i + 1; return nil })
	if err == nil && m != n {
		return dst, fmt.Errorf("stream: codec: the NaNs and infinities of %T would not be given back: its JSON gives back %d of its %d floats (an embedded pointer whose fields are all omitted is dropped)", v, m, n)
	}
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// decodeNonFinite decodes into v what appendNonFinite encoded.
func decodeNonFinite[T any](b []byte, v *T) error {
	var nf nonFiniteJSON
	if err := json.Unmarshal(b[1:], &nf); err != nil {
		return err
	}
	if err := json.Unmarshal(nf.Value, v); err != nil {
		return err
	}
	err := eachFloat(reflect.ValueOf(v).Elem(), func(i int, f reflect.Value) error {
		s, ok := nf.Floats[i]
		if !ok {
			return nil
		}
		x, err := strconv.ParseFloat(s, 64)
		if err != nil || !math.IsNaN(x) && !math.IsInf(x, 0) {
			return fmt.Errorf("stream: codec: float %d of the value is %q, not NaN nor an infinity", i, s)
		}
		f.SetFloat(x)
		delete(nf.Floats, i)
		return nil
	})
	if err == nil && len(nf.Floats) > 0 {
		err = fmt.Errorf("stream: codec: %d non-finite floats beyond the floats of the value", len(nf.Floats))
	}
	return err
}

// maxFloatDepth bounds how deep eachFloat goes: as deep as
// encoding/json decodes, which a value nested in itself passes.
const maxFloatDepth = 10000

// eachFloat calls f with every float of v that encoding/json encodes, in
// an order that the value decoded from v's JSON gives again: struct
// fields and elements in order, map elements by their keys' JSON, as
// json.Marshal writes them. v must be settable: the pointers, slices and
// maps it goes through are copied first, so that f may set floats
// without touching what v shares with other values. Types that encode
// themselves (json.Marshaler, encoding.TextMarshaler and their
// unmarshalers) and interfaces are left to encoding/json.
func eachFloat(v reflect.Value, f func(i int, x reflect.Value) error) error {
	w := floatWalk{f: f, holds: map[reflect.Type]bool{}}
	return w.walk(v, 0)
}

type floatWalk struct {
	f     func(int, reflect.Value) error
	n     int                   // floats visited
	holds map[reflect.Type]bool // of holdsFloats
}

func (w *floatWalk) walk(v reflect.Value, depth int) error {
	t := v.Type()
	holds, ok := w.holds[t]
	if !ok {
		holds = holdsFloats(t, map[reflect.Type]bool{})
		w.holds[t] = holds
	}
	if !holds {
		return nil
	}
	if depth > maxFloatDepth {
		return fmt.Errorf("stream: codec: %v nested over %d deep", t, maxFloatDepth)
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		w.n++
		return w.f(w.n-1, v)
	case reflect.Pointer:
		// What cannot be set (behind an embedded pointer to an
		// unexported type) is left to encoding/json: the walks of the
		// value encoded and of the value decoded skip it alike.
		if v.IsNil() || !v.CanSet() {
			return nil
		}
		c := reflect.New(t.Elem())
		c.Elem().Set(v.Elem())
		v.Set(c)
		return w.walk(c.Elem(), depth+1)
	case reflect.Slice:
		if v.IsNil() || !v.CanSet() {
			return nil
		}
		c := reflect.MakeSlice(t, v.Len(), v.Len())
		reflect.Copy(c, v)
		v.Set(c)
		return w.walkElems(c, depth)
	case reflect.Array:
		return w.walkElems(v, depth)
	case reflect.Map:
		if v.IsNil() || !v.CanSet() {
			return nil
		}
		keys, err := jsonKeys(v)
		if err != nil {
			return err
		}
		c := reflect.MakeMapWithSize(t, v.Len())
		for _, k := range keys {
			e := reflect.New(t.Elem()).Elem()
			e.Set(v.MapIndex(k))
			if err := w.walk(e, depth+1); err != nil {
				return err
			}
			c.SetMapIndex(k, e)
		}
		v.Set(c)
	case reflect.Struct:
		for i := range t.NumField() {
			if jsonSkips(t.Field(i)) {
				continue
			}
			if err := w.walk(v.Field(i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *floatWalk) walkElems(v reflect.Value, depth int) error {
	for i := range v.Len() {
		if err := w.walk(v.Index(i), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// holdsFloats reports whether a value of t may hold a float that
// eachFloat visits.
func holdsFloats(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] || encodesItself(t) {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return holdsFloats(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); !jsonSkips(f) && holdsFloats(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

// encodesItself reports whether encoding/json leaves values of t to a
// method of theirs, in either direction.
func encodesItself(t reflect.Type) bool {
	for _, i := range []reflect.Type{
		reflect.TypeFor[json.Marshaler](), reflect.TypeFor[json.Unmarshaler](),
		reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[encoding.TextUnmarshaler](),
	} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

// jsonSkips reports whether encoding/json leaves f out of its struct.
func jsonSkips(f reflect.StructField) bool {
	if f.Tag.Get("json") == "-" {
		return true
	}
	if f.IsExported() {
		return false
	}
	t := f.Type
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return !f.Anonymous || t.Kind() != reflect.Struct
}

// jsonKeys returns the keys of the map m sorted by their JSON, as
// json.Marshal sorts them.
func jsonKeys(m reflect.Value) ([]reflect.Value, error) {
	type named struct {
		k    reflect.Value
		name string
	}
	keys := make([]named, 0, m.Len())
	for it := m.MapRange(); it.Next(); {
		k := it.Key()
		name, err := jsonKey(k)
		if err != nil {
			return nil, err
		}
		keys = append(keys, named{k, name})
	}
	slices.SortFunc(keys, func(a, b named) int { return strings.Compare(a.name, b.name) })
	out := make([]reflect.Value, len(keys))
	for i, k := range keys {
		out[i] = k.k
	}
	return out, nil
}

// jsonKey is the name of the map key k in JSON.
func jsonKey(k reflect.Value) (string, error) {
	if k.Kind() == reflect.String {
		return k.String(), nil
	}
	if tm, ok := k.Interface().(encoding.TextMarshaler); ok {
		if k.Kind() == reflect.Pointer && k.IsNil() {
			return "", nil
		}
		b, err := tm.MarshalText()
		return string(b), err
	}
	switch k.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(k.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(k.Uint(), 10), nil
	}
	return "", errors.New("stream: codec: map key of " + k.Type().String())
}
