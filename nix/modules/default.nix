# The Outpost services (agent, coordinator, relay, and `outpost web` for an admin's workstation),
# each off until its `enable` is set, and the application services
# (services.outpost-apps), off until an app is declared.
{
  imports = [
    ./agent.nix
    ./apps.nix
    ./coordinator.nix
    ./relay.nix
    ./web.nix
  ];
}
