# Options the coordinator and the relay share: serving TLS directly, the resource limits (each
# flag is declared once in coordinator/limits.ts; docs/operations.md, "Limits") and the log level.
# The NixOS module test checks every default against the command's `--help --json`.
{
  lib,
  service,
  tlsExampleDir,
  tlsCertDescription,
}:

let
  inherit (lib) mkOption types;
  absolutePath = types.strMatching "/.+";
in
{
  tlsCertFile = mkOption {
    type = types.nullOr absolutePath;
    default = null;
    example = "${tlsExampleDir}/cert.pem";
    description = tlsCertDescription;
  };

  tlsKeyFile = mkOption {
    type = types.nullOr absolutePath;
    default = null;
    example = "${tlsExampleDir}/key.pem";
    description = "PEM private key for tlsCertFile (a path string, never copied into the Nix store).";
  };

  # Resource limits; each is shown in /healthz with its refusals.
  maxConnectionsPerAddress = mkOption {
    type = types.ints.positive;
    default = 4096;
    description = ''
      Open connections one client address may hold. Behind a reverse proxy every client has the
      proxy's address: raise this to the fleet's size and limit per client in the proxy.
    '';
  };

  maxPendingUpgrades = mkOption {
    type = types.ints.positive;
    default = 128;
    description = "Connections one address may hold that have not sent a complete request yet.";
  };

  upgradeTimeout = mkOption {
    type = types.ints.positive;
    default = 10;
    description = "Seconds a connection has to send a complete request (or websocket upgrade) before it is dropped.";
  };

  maxDocumentsPerConnection = mkOption {
    type = types.ints.positive;
    default = 25000;
    description = "Documents one relay link may hold open, and hosts it may report presence for.";
  };

  maxUpdateSize = mkOption {
    type = types.ints.positive;
    default = 262144;
    description = "Bytes of new content one update may add to a document; bigger writes are refused.";
  };

  maxWriterBytesPerHour = mkOption {
    type = types.ints.positive;
    default = 67108864;
    description = ''
      Bytes of new content one writer (a host, an admin; a relay per document) may add per hour;
      beyond it its writes are refused until the quota refills.
    '';
  };

  maxDocumentSize = mkOption {
    type = types.ints.positive;
    default = 33554432;
    description = "Largest state, in bytes, a document may grow to (what every reader syncs).";
  };

  maxValueDepth = mkOption {
    type = types.ints.positive;
    default = 64;
    description = "Levels a value written into a document may nest (canonical JSON signs 64).";
  };

  maxValueObjectsPerKib = mkOption {
    type = types.ints.positive;
    default = 64;
    description = "Objects and arrays the values of one update may hold per KiB of update (each costs ~100 bytes of server memory).";
  };

  logLevel = import ./log-level-option.nix { inherit lib service; };
}
