# The log level option every Outpost service has (`--log-level`); `service` names its unit.
{ lib, service }:

lib.mkOption {
  type = lib.types.enum [
    "trace"
    "debug"
    "info"
    "warn"
    "error"
  ];
  default = "info";
  description = "Log level; logs are JSON lines in the journal (`journalctl -u ${service}`).";
}
