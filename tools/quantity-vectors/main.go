// Command quantity-vectors prints, as JSON, what the real Kubernetes library
// (k8s.io/apimachinery resource.Quantity) does with a table of inputs, so that
// the Python port in airflow_adaptive/domain/quantities.py can be tested
// against Kubernetes itself rather than against our reading of it.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/api/resource"
)

// inputs: every suffix, exponents, decimals, nano rounding, int64 edges,
// the parser's odd corners (bare signs, bare suffixes, int32 exponent wrap),
// negatives, and strings Kubernetes rejects.
var inputs = []string{
	// plain integers and zeros
	"0", "00", "+0", "-0", "1", "+1", "-1", "01", "0010", "7", "10", "100",
	"1000", "1001", "1500", "10000", "999999", "1000000", "123456789",
	"123456789012345678", "1234567890123456789", "9223372036854775807",
	"9223372036854775808", "-9223372036854775807", "-9223372036854775808",
	"-9223372036854775809", "18446744073709551616", "99999999999999999999999",
	// decimals
	"1.5", "0.5", ".5", "+.5", "1.", "0.1", "0.25", "0.001", "0.0001", "1.500",
	"1.050", "1.000", "001.5", "-1.5", "-0.5", "3.14159", "0.000000001",
	"0.0000000001", "0.0000000015", "-0.0000000015", "-0.0000000001",
	"1.0000000001", "123.456789012345678901", "1.G", ".", "-.", "+", "-",
	"0.000000000000000000001",
	// decimal SI suffixes
	"1n", "1u", "1m", "250m", "1500m", "1k", "1M", "1G", "1T", "1P", "1E",
	"100k", "1000k", "1000E", "9E", "10E", "0.5m", "0.1m", "1.5n", "-1n",
	"-250m", "1.5k", "2.5G", "1000n", "1000000u", "999m", "100m", "0.25m",
	"12345678901234567890m", "0.0001m", "1.5u", "m", "k", "n", "E", "-1.5n",
	"1500000000n", "9223372036854775807m", "9223372036854775807n", "0.5E",
	// binary SI suffixes
	"1Ki", "100Ki", "1024Ki", "1025Ki", "1536Ki", "1Mi", "512Mi", "1024Mi",
	"1Gi", "4Gi", "1Ti", "1Pi", "1Ei", "7Ei", "8Ei", "16Ei", "0.5Gi", "1.5Gi",
	"0.5Ki", "0.001Ki", "0.1Ki", "1.5Ki", "-1Ki", "-1.5Gi", "+1Ki", "01Ki",
	"0Ki", "Gi", "Ki", "12345678901Ki", "123456789012Ki", "1.0Gi", "2048Mi",
	"-8Ei", "1000Mi", "0.0000000001Ki", "0.000000001Ki", "1023Ki", "8Ki",
	"1.25Ki", "0.75Ki", "3Ti", "2.5Ei", "-16Ei",
	// decimal exponents
	"1e3", "1E3", "1e+3", "1e-3", "1e0", "1e1", "1e2", "12e6", "1.5e3",
	"1e-9", "1e-10", "1.5e-9", "1e18", "1e19", "1e100", "1e-100", "-1e3",
	"0e5", "e3", "1.5E-3", "2e-1", "1E-3", "25e-2", "1000e-3", "1e6",
	"1e2147483647", "1.5e-2147483648", "1e-1000", "1e1000", "1e4294967296",
	"1e9223372036854775807", "1e9223372036854775808", "e-10", "0e-10",
	"12345678901234567890e5", "-12345678901234567890e-5", "1.5e-10",
	// int64 overflow inside String() and Value(), negative rounding paths
	"999999999999999999e-1", "-999999999999999999e-2", "123456789012345678e2",
	"9.99999999999999999", "-12345678901234567890", "-1.5m", "-1.0001",
	"-1.0000000001", "-0.0005", "-1e-10", "-0.5Ki", "-0.0000000001Ki",
	"9223372036854775807e-9", "9223372036854775807e-3", "-9223372036854775808m",
	// bare and odd-shaped numbers around suffixes
	"-Ki", ".Gi", "-.5Ki", "1.Ki", "-1.Ki", "e+3", "+e3", "0.1Ei",
	"9007199254740993Ki", "8589934591Gi", "8589934592Gi", "1.5Ti", "0.25Mi",
	// rejected
	"", " 1", "1 ", "1 Gi", "1Gb", "1.5.5", "1e", "1E3i", "1ki", "1K",
	"1KB", "1mi", "abc", "1e3.5", "1e+", "1e-", "--1", "+-1", "1,5",
	"1_000", "0x10", "1Gi1", "1Mi ", "Infinity", "NaN", "1e1e1", "1m3",
	"1Ee3", "\u0661", "1i", "1ii", "1.5e", "e", "1Mm", "1GiB", "\t1",
	"1\n", "ten", "1/2", "1e-9Ki", "1e3m", "1me3", "1Mi3", "\uff11",
	"1.5.", "..5", "1..", "-+1", "1-", "1+", "1e3e", "1Ki-1",
}

var byteCounts = []int64{
	0, 1, 512, 999, 1000, 1023, 1024, 1025, 1500, 2048, 1000000, 1048576,
	128974848, 1000000000, 1073741824, 1073741825, 1610612736, 4294967296,
	5*(1<<30) + 1, 1000000000000, 1 << 60, math.MaxInt64, -1, -1024, -2048,
}

var millicores = []int64{
	0, 1, 10, 100, 250, 999, 1000, 1001, 1500, 2000, 3100, 10000, 100000,
	123456, 1000000, 1000000000, math.MaxInt64, -500, -1000,
}

var formats = []resource.Format{resource.BinarySI, resource.DecimalSI, resource.DecimalExponent}

type vector struct {
	Input     string `json:"input"`
	Valid     bool   `json:"valid"`
	Error     string `json:"error,omitempty"`
	Canonical string `json:"canonical,omitempty"`
	Milli     int64  `json:"milli"`
	Value     int64  `json:"value"`
	Format    string `json:"format,omitempty"`
	// The exact amount, unscaled * 10^-scale; omitted where the scale is
	// too large to print cheaply.
	Unscaled string `json:"unscaled,omitempty"`
	Scale    *int32 `json:"scale,omitempty"`
	// String() of the same amount in each format, as a fresh Quantity
	// (so without the parser's remembered input string).
	As map[string]string `json:"as,omitempty"`
}

type newVector struct {
	N      int64  `json:"n"`
	String string `json:"string"`
}

type output struct {
	Library    string      `json:"library"`
	Quantities []vector    `json:"quantities"`
	BinaryInts []newVector `json:"new_quantity_binary_si"`
	MilliInts  []newVector `json:"new_milli_quantity_decimal_si"`
}

func main() {
	out := output{Library: "k8s.io/apimachinery " + libraryVersion()}
	for _, in := range inputs {
		v := vector{Input: in}
		q, err := resource.ParseQuantity(in)
		if err != nil {
			v.Error = err.Error()
			out.Quantities = append(out.Quantities, v)
			continue
		}
		v.Valid = true
		v.Canonical = q.String()
		v.Milli = q.MilliValue()
		v.Value = q.Value()
		v.Format = string(q.Format)
		d := q.AsDec()
		if s := int32(d.Scale()); s > -1000 && s < 1000 {
			v.Unscaled = d.UnscaledBig().String()
			v.Scale = &s
			v.As = map[string]string{}
			for _, f := range formats {
				v.As[string(f)] = resource.NewDecimalQuantity(*d, f).String()
			}
		}
		out.Quantities = append(out.Quantities, v)
	}
	for _, n := range byteCounts {
		out.BinaryInts = append(out.BinaryInts, newVector{n, resource.NewQuantity(n, resource.BinarySI).String()})
	}
	for _, m := range millicores {
		out.MilliInts = append(out.MilliInts, newVector{m, resource.NewMilliQuantity(m, resource.DecimalSI).String()})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// libraryVersion is the apimachinery version this binary was built with.
func libraryVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/apimachinery" {
				return dep.Version
			}
		}
	}
	return "unknown"
}
