// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice A hostile ERC-20 for tests: `rebase` takes a share of every holder's balance away
/// (as a negative rebase does), without any transfer by the holder.
contract RebasingToken is ERC20 {
    uint256 public shareBps = 10_000; // balances are scaled by shareBps / 10,000

    constructor() ERC20("Rebasing", "REBASE") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount * 10_000 / shareBps);
    }

    function rebase(uint256 newShareBps) external {
        shareBps = newShareBps;
    }

    function balanceOf(address account) public view override returns (uint256) {
        return super.balanceOf(account) * shareBps / 10_000;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value * 10_000 / shareBps);
    }
}
