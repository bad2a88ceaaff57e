# systemd sandboxing for the coordinator and the relay: they only need their state directory and
# the network, so they run as a transient user with a read-only system. (The agent cannot use
# this: switch-to-configuration must be able to change the whole system.)
#
# `port`: the listening port; below 1024 the service keeps CAP_NET_BIND_SERVICE and nothing else.
{ port }:
let
  privilegedPort = port != 0 && port < 1024;
  capabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
in
{
  DynamicUser = true;
  NoNewPrivileges = true;
  CapabilityBoundingSet = capabilities;
  AmbientCapabilities = capabilities;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  # A private user namespace cannot hold CAP_NET_BIND_SERVICE for the host's network.
  PrivateUsers = !privilegedPort;
  ProtectHostname = true;
  ProtectClock = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectProc = "invisible";
  RestrictAddressFamilies = [
    "AF_INET"
    "AF_INET6"
    "AF_UNIX"
  ];
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  RemoveIPC = true;
  LockPersonality = true;
  # Node's JIT needs writable and executable memory.
  MemoryDenyWriteExecute = false;
  SystemCallArchitectures = "native";
  SystemCallFilter = [
    "@system-service"
    "~@privileged"
  ];
  UMask = "0077";
}
