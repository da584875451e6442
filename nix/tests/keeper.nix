# Two machines: `node` runs services.rbee (hive on loopback, as the module's default);
# `laptop` has rbee-keeper, registers `node` over SSH (key, host key pinned) and runs
# `infer` there through SSH port forwards — the README's two-node setup.
{ self, pkgs, lib, ... }:

let
  smollm2 = self.packages.${pkgs.stdenv.hostPlatform.system}.smollm2;
  rbee = self.packages.${pkgs.stdenv.hostPlatform.system}.rbee;
  # nixpkgs' test keys (a file and its public line).
  snakeoil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
in
{
  name = "rbee-keeper";

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ];
    services.rbee = {
      enable = true;
      models = [ smollm2 ];
    };
    services.openssh.enable = true;
    users.users.root.openssh.authorizedKeys.keys = [ snakeoil.snakeOilEd25519PublicKey ];
    virtualisation.memorySize = 2048;
  };

  nodes.laptop = { ... }: {
    environment.systemPackages = [ rbee ];
  };

  testScript = ''
    start_all()
    node.wait_for_unit("rbee-hive.service")
    node.wait_for_unit("sshd.service")

    laptop.succeed(
        "mkdir -p -m 700 /root/.ssh",
        "cp ${snakeoil.snakeOilEd25519PrivateKey} /root/.ssh/id_ed25519",
        "chmod 600 /root/.ssh/id_ed25519",
        "ssh-keyscan node >> /root/.ssh/known_hosts",
    )
    out = laptop.succeed(
        "rbee-keeper setup add-node --name node --ssh-host node --ssh-user root "
        "--ssh-key /root/.ssh/id_ed25519 2>&1"
    )
    assert "registered" in out, out
    answer = laptop.succeed(
        "rbee-keeper infer --node node --model file://${smollm2} "
        "--prompt 'Write a haiku about bees' --max-tokens 16 --temperature 0"
    )
    assert answer.strip(), "an answer on stdout"
    table = laptop.succeed("rbee-keeper workers list --node node")
    assert "idle" in table, table
  '';
}
