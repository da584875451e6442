# One node: `services.rbee.enable`, the small model provided declaratively (a Nix path in
# services.rbee.models), a worker spawned through the hive's API, its transient unit
# active and sandboxed, a streamed answer through the front door, and the workers stopped
# with the hive.
{ self, pkgs, ... }:

let
  smollm2 = self.packages.${pkgs.stdenv.hostPlatform.system}.smollm2;
in
{
  name = "rbee-hive";

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ];
    services.rbee = {
      enable = true;
      models = [ smollm2 ];
    };
    virtualisation.memorySize = 2048;
    environment.systemPackages = [ pkgs.curl pkgs.jq ];
  };

  testScript = ''
    import json

    node.wait_for_unit("rbee-hive.service")
    node.wait_for_open_port(9200)
    node.succeed("systemctl show -p User --value rbee-hive | grep -qx rbee")

    # The declared model is in the catalogue without a request.
    node.wait_until_succeeds(
        "curl -sf localhost:9200/v1/models | jq -e '.models | length == 1'", timeout=60
    )

    spawn = json.loads(node.succeed(
        "curl -sf localhost:9200/v1/workers/spawn "
        "-d '{\"model_ref\": \"file://${smollm2}\"}'"
    ))
    worker_id = spawn["worker"]["id"]
    unit = spawn["worker"]["unit"]
    node.wait_until_succeeds(
        f"curl -sf localhost:9200/v1/workers/{worker_id} | jq -e '.worker.state == \"idle\"'",
        timeout=120,
    )
    node.succeed(f"systemctl is-active '{unit}'")
    node.succeed(f"systemctl show -p DynamicUser --value '{unit}' | grep -qx yes")
    exposure = node.succeed(f"systemd-analyze security '{unit}' | tail -1")
    print(exposure)

    # Through the front door: worker keys never leave the hive.
    worker = json.loads(node.succeed(f"curl -sf localhost:9200/v1/workers/{worker_id}"))["worker"]
    assert "api_key" not in worker, worker
    answer = node.succeed(
        "curl -sfN localhost:9200/v1/chat/completions "
        "-d '{\"model\": \"file://${smollm2}\", \"max_tokens\": 8, \"temperature\": 0, "
        "\"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"Bees are\"}]}'"
    )
    assert "[DONE]" in answer, answer

    node.succeed("systemctl stop rbee-hive.service")
    node.fail(f"systemctl is-active '{unit}'")
  '';
}
