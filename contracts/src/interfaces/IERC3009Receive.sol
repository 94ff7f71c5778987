// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title The EIP-3009 receive function in its `bytes signature` form
/// @notice What the Marketplace calls to take a buyer's signed payment: only the payee (the
/// Marketplace itself) can submit a `ReceiveWithAuthorization`, so nobody can front-run it.
interface IERC3009Receive {
    /// @notice Moves `value` from `from` to `to` (the caller) under `from`'s EIP-712 signature.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}
