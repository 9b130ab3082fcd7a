package bpf

//go:generate go tool bpf2go -target bpfel -go-package bpf -type verdict -type network_flag -type network_info -type iface_info -type subnet_key -type counter Endpoint endpoint.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
