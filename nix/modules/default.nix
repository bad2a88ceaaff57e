# All three Outpost services; each stays off until its `enable` is set.
{
  imports = [
    ./agent.nix
    ./coordinator.nix
    ./relay.nix
  ];
}
