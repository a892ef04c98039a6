"""On-chain settlement over web3: deploy, deposit, propose, challenge, finalize, claim, slash."""
