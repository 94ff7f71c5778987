// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";

/// @title ApprovingSigner — an ERC-1271 signer that approves every signature (test-only)
/// @notice Stands for a smart-contract wallet, or the code an EIP-7702-delegated account runs:
/// `isValidSignature` says yes to any hash and any bytes. PaymentChannels must not take its word:
/// vouchers are plain ECDSA, so a gateway checking them off chain reaches the contract's verdict.
contract ApprovingSigner is IERC1271 {
    // ---------------------------------------------------------------- external

    /// @notice ERC-1271: every signature is valid.
    function isValidSignature(bytes32, bytes memory) external pure returns (bytes4 magicValue) {
        return IERC1271.isValidSignature.selector;
    }
}
