//go:build !linux

package benchenv

import (
	"errors"
	"syscall"
)

// The benchmarks measure processes through Linux's /proc; elsewhere they
// build, and refuse to measure.
var errNoProcfs = errors.New("measuring a process needs Linux's /proc")

func ProcAttr() *syscall.SysProcAttr                  { return nil }
func CPUSeconds(int) (float64, error)                 { return 0, errNoProcfs }
func TreeCPUSeconds(int) (float64, error)             { return 0, errNoProcfs }
func EstablishedTo(...string) (map[string]int, error) { return nil, errNoProcfs }
func Status(int, ...string) (map[string]int64, error) { return nil, errNoProcfs }
func RSS(int) (int64, error)                          { return 0, errNoProcfs }
func OpenFiles(int) (int, error)                      { return 0, errNoProcfs }
func OpenFileLimit() uint64                           { return 0 }
func Kernel() string                                  { return "" }
func LoadAvg() string                                 { return "" }
func MemTotal() int64                                 { return 0 }
