"""Interoperability: Hugging Face PEFT adapters in and out, vLLM prompt-embedding requests out."""

from softprompt.interop.peft_format import export_peft, import_peft
from softprompt.interop.vllm_format import export_vllm_embeds, vllm_request_payload

__all__ = ["export_peft", "export_vllm_embeds", "import_peft", "vllm_request_payload"]
