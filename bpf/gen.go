package bpf

// The shared types come from datapath.c alone; the program objects skip
// theirs (-no-global-types) and use the same maps.
//go:generate go tool bpf2go -target bpfel -go-package bpf -type verdict -type program -type stats_slots -type network_flag -type ct_flag -type network_info -type iface_info -type endpoint_info -type subnet_key -type counter -type publication_key -type publication -type publication_flag -type maglev_size -type maglev_table -type source_key -type source_action -type egress_key -type egress_action -type egress_name_key -type uplink_info -type flow -type ct_entry -type ct_source -type ct_state -type ct_timeouts -type target_key -type frag_key -type frag_ports -type sock_peer -type sock_peers -type held_port_key -type monitor_type -type monitor_config -type monitor_event -type vxlan -type rate_direction -type rate_key -type rate_limit -type rate_bucket Datapath datapath.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types Endpoint endpoint.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types Uplink uplink.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types UplinkXDP uplink_xdp.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types Sock sock.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
